"""Stage settings: studies/<stage>.toml, overridden by a dict of "section.key" values, validated once.

One frozen dataclass per TOML section; its fields are the section's keys (a field's `key` metadata
when the TOML name is not a Python name, as for `lambda`), their types and defaults. Each rule is
checked once, by the object that owns it: the training rules by model.train.TrainSettings, the data
split by the CIFAR-10 loader, the search rules by their sections (sections.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from model.train import TrainSettings
from pipeline.errors import ConfigError
from pipeline.settings import legacy, space, toml
from pipeline.settings.sections import (  # noqa: F401  (ConfirmSection is also reached through config)
    STUDIES,
    ConfirmSection,
    DataSection,
    FineSection,
    ModelSection,
    SearchSection,
    TrainSection,
)

SECTIONS: dict[str, type] = {"data": DataSection, "model": ModelSection, "train": TrainSection,
                             "search": SearchSection, "fine": FineSection, "confirm": ConfirmSection}
DEFAULT_SPACE = {"train.lambda": {"low": 1e-5, "high": 1e-1, "log": True}}


def _keys(section: type) -> dict[str, dataclasses.Field]:
    """TOML key -> dataclass field of a section."""
    return {f.metadata.get("key", f.name): f for f in dataclasses.fields(section)}


@dataclass(frozen=True)
class Settings:
    """A stage's validated settings, one typed object per TOML section."""

    name: str
    data: DataSection
    model: ModelSection
    train: TrainSection
    search: SearchSection
    fine: FineSection
    confirm: ConfirmSection
    space: dict = field(default_factory=dict)  # setting key -> space.Dimension
    source: str = ""

    def flat(self) -> dict[str, object]:
        """"section.key" -> value, as logged to MLflow and hashed into the digest (the space as JSON)."""
        values = {f"{name}.{key}": getattr(getattr(self, name), f.name)
                  for name, section in SECTIONS.items() for key, f in _keys(section).items()}
        return values | {"space": space.to_json(self.space)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.flat(), sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, values: dict[str, object]) -> Settings:
        """A copy with some "section.key" values replaced, validated again."""
        flat = self.flat()
        del flat["space"]
        return build(self.name, flat | values, self.source, self.space)

    def train_settings(self) -> TrainSettings:
        """What model.train needs: the [model] and [train] sections, field by field."""
        return TrainSettings(**dataclasses.asdict(self.model), **dataclasses.asdict(self.train))


def default_path(stage: str) -> Path:
    return STUDIES / f"{stage}.toml"


def load(stage: str, path: Path | None = None, overrides: dict[str, object] | None = None) -> Settings:
    """Read a stage's settings file (default studies/<stage>.toml), apply the overrides, validate."""
    path = Path(path) if path is not None else default_path(stage)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} not found; pass --config FILE") from None
    except OSError as e:
        raise ConfigError(f"cannot read settings file {path}: {e.strerror}") from None
    try:
        doc = toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return build(stage, _flatten(doc, path) | dict(overrides or {}), str(path))


def parse_override(item: str) -> tuple[str, object]:
    """'train.n_s=300' -> ('train.n_s', 300): the value is read as TOML, else taken as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set expects section.key=value; got {item!r}")
    try:
        value = toml.loads(f"v = {raw.strip()}")["v"]
    except toml.TOMLDecodeError:
        value = raw.strip()
    return key, value


def _flatten(doc: dict, path: Path) -> dict:
    values = {}
    for section, table in doc.items():
        if section == "space":  # its keys are dotted settings: "train.lambda" = { ... }
            values |= {f"space.{key}": spec for key, spec in (table.items() if isinstance(table, dict) else [])}
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]; known: {', '.join(SECTIONS)}")
        for key, value in table.items():
            values[f"{section}.{key}"] = value
    return values


def build(name: str, values: dict[str, object], source: str = "", searched: dict | None = None) -> Settings:
    """Typed sections from "section.key" values; unknown keys, wrong types and broken rules are ConfigErrors.

    The space comes from "space.<setting>" values (the [space] table), else `searched`, else λ alone."""
    where = f"{source}: " if source else ""
    given: dict[str, dict] = {section: {} for section in SECTIONS}
    table = {}
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if dotted in legacy.MOVED:
            raise ConfigError(f"{where}{dotted} moved to {legacy.MOVED[dotted]}")
        if section == "space":
            table[key] = value
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{where}unknown section [{section}] (key {dotted}); known: "
                              f"{', '.join([*SECTIONS, 'space'])}")
        fields = _keys(SECTIONS[section])
        if key not in fields:
            raise ConfigError(f"{where}unknown key {dotted}; [{section}] takes: {', '.join(fields)}")
        given[section][fields[key].name] = _typed(dotted, value, _types()[dotted], where)
    searched = space.parse(table, _types(), where) if table else searched or space.parse(DEFAULT_SPACE, _types())
    try:
        sections = {section: cls(**given[section]) for section, cls in SECTIONS.items()}
        settings = Settings(name, **sections, space=searched, source=source)
        settings.train_settings()  # the training rules live with the training
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    return settings


@functools.cache
def _types() -> dict[str, type]:
    """"section.key" -> the setting's type."""
    return {f"{name}.{key}": typing.get_type_hints(section)[f.name]
            for name, section in SECTIONS.items() for key, f in _keys(section).items()}


def _typed(dotted: str, value, kind: type, where: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{dotted} must be {kind.__name__}; got {value!r} ({type(value).__name__})")
    return value
