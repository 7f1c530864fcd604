"""Stage settings: studies/<stage>.toml, overridden by a dict of "section.key" values, validated once.

One frozen dataclass per TOML section; its fields are the section's keys (a field's `key` metadata
when the TOML name is not a Python name, as for `lambda`), their types and defaults. Each rule is
checked once, by the object that owns it: the training rules by model.train.TrainSettings, the data
split by the CIFAR-10 loader, the search rules here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from model import data as cifar10
from model.train import TrainSettings
from pipeline.errors import ConfigError

STUDIES = Path("studies")
SAMPLERS = ("random", "tpe", "qmc")
SELECT_RULES = ("best", "one-se")


@dataclass(frozen=True)
class DataSection:
    split: str = "holdout"  # "exercise" (batch 1 / batch 2 / test) or "holdout"
    val_size: int = 5000  # holdout: the last val_size training images validate

    def __post_init__(self):
        try:
            cifar10.check_split(self.split, self.val_size)
        except cifar10.DataError as e:
            raise ValueError(str(e)) from None


@dataclass(frozen=True)
class ModelSection:
    hidden: int = 50


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = 100
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 500
    cycles: int = 1
    checkpoints_per_cycle: int = 10
    seed: int = 0
    lam: float = field(default=0.01, metadata={"key": "lambda"})


@dataclass(frozen=True)
class SearchSection:
    n_trials: int = 8
    lambda_min: float = 1e-5
    lambda_max: float = 1e-1
    widen: float = 0.25
    sampler: str = "random"
    prune: bool = True
    stratify: bool = True
    select: str = "best"

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"search.sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.select not in SELECT_RULES:
            raise ValueError(f"search.select must be one of {', '.join(SELECT_RULES)}; got {self.select!r}")
        if self.n_trials < 1:
            raise ValueError(f"search.n_trials must be ≥ 1; got {self.n_trials}")
        if self.lambda_min <= 0 or self.lambda_max <= 0:
            raise ValueError(f"λ bounds must be > 0; got lambda_min={self.lambda_min}, lambda_max={self.lambda_max}")
        if self.lambda_min >= self.lambda_max:
            raise ValueError(f"search.lambda_min must be < search.lambda_max; got {self.lambda_min} ≥ "
                             f"{self.lambda_max}")
        if self.widen < 0:
            raise ValueError(f"search.widen must be ≥ 0; got {self.widen}")


SECTIONS: dict[str, type] = {"data": DataSection, "model": ModelSection, "train": TrainSection,
                             "search": SearchSection}


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
    source: str = ""

    def flat(self) -> dict[str, object]:
        """"section.key" -> value, as logged to MLflow and hashed into the digest."""
        return {f"{name}.{key}": getattr(getattr(self, name), f.name)
                for name, section in SECTIONS.items() for key, f in _keys(section).items()}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.flat(), sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, values: dict[str, object]) -> Settings:
        """A copy with some "section.key" values replaced, validated again."""
        return build(self.name, self.flat() | values, self.source)

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
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return build(stage, _flatten(doc, path) | dict(overrides or {}), str(path))


def parse_override(item: str) -> tuple[str, object]:
    """'train.n_s=300' -> ('train.n_s', 300): the value is read as TOML, else taken as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set expects section.key=value; got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def _flatten(doc: dict, path: Path) -> dict:
    values = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]; known: {', '.join(SECTIONS)}")
        for key, value in table.items():
            values[f"{section}.{key}"] = value
    return values


def build(name: str, values: dict[str, object], source: str = "") -> Settings:
    """Typed sections from "section.key" values; unknown keys, wrong types and broken rules are ConfigErrors."""
    where = f"{source}: " if source else ""
    given: dict[str, dict] = {section: {} for section in SECTIONS}
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"{where}unknown section [{section}] (key {dotted}); known: {', '.join(SECTIONS)}")
        fields = _keys(SECTIONS[section])
        if key not in fields:
            raise ConfigError(f"{where}unknown key {dotted}; [{section}] takes: {', '.join(fields)}")
        kind = typing.get_type_hints(SECTIONS[section])[fields[key].name]
        given[section][fields[key].name] = _typed(dotted, value, kind, where)
    try:
        sections = {section: cls(**given[section]) for section, cls in SECTIONS.items()}
        settings = Settings(name, **sections, source=source)
        settings.train_settings()  # the training rules live with the training
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    return settings


def _typed(dotted: str, value, kind: type, where: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{dotted} must be {kind.__name__}; got {value!r} ({type(value).__name__})")
    return value
