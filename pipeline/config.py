"""Stage settings: studies/<stage>.toml, overridden by --set section.key=value, validated and frozen.

The TOML keys are a user-facing contract; every key is declared once, in SCHEMA.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from model.train import TrainSettings
from pipeline.errors import ConfigError

STUDIES = Path("studies")
SAMPLERS = ("random", "tpe", "qmc")
SELECT_RULES = ("one-se", "best")
SPLITS = ("exercise", "holdout")

# section -> key -> (type, default)
SCHEMA: dict[str, dict[str, tuple[type, object]]] = {
    "data": {"split": (str, "holdout"), "val_size": (int, 5000)},
    "model": {"hidden": (int, 50)},
    "train": {
        "batch_size": (int, 100),
        "eta_min": (float, 1e-5),
        "eta_max": (float, 1e-1),
        "n_s": (int, 500),
        "cycles": (int, 1),
        "checkpoints_per_cycle": (int, 10),
        "seed": (int, 0),
        "lambda": (float, 0.01),
    },
    "search": {
        "n_trials": (int, 8),
        "lambda_min": (float, 1e-5),
        "lambda_max": (float, 1e-1),
        "widen": (float, 0.25),
        "sampler": (str, "random"),
        "prune": (bool, True),
        "stratify": (bool, True),
        "select": (str, "best"),
    },
}


@dataclass(frozen=True)
class StageConfig:
    """A stage's validated settings. `values` maps "section.key" to its value."""

    name: str
    values: MappingProxyType = field(repr=False)
    source: str = ""

    def __getitem__(self, dotted: str):
        return self.values[dotted]

    def flat(self) -> dict:
        return dict(self.values)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.flat(), sort_keys=True).encode()).hexdigest()[:16]

    def with_values(self, **dotted) -> StageConfig:
        """A copy with some values replaced (keys as "section__key"), validated again."""
        merged = self.flat() | {k.replace("__", "."): v for k, v in dotted.items()}
        return _validated(self.name, merged, self.source)

    def train_settings(self, lam: float | None = None) -> TrainSettings:
        return TrainSettings(
            lam=self["train.lambda"] if lam is None else lam,
            hidden=self["model.hidden"],
            batch_size=self["train.batch_size"],
            eta_min=self["train.eta_min"],
            eta_max=self["train.eta_max"],
            n_s=self["train.n_s"],
            cycles=self["train.cycles"],
            checkpoints_per_cycle=self["train.checkpoints_per_cycle"],
            seed=self["train.seed"],
        )


def default_path(stage: str) -> Path:
    return STUDIES / f"{stage}.toml"


def load(stage: str, path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> StageConfig:
    """Read a stage's settings file (default studies/<stage>.toml), apply --set overrides, validate."""
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
    values = _flatten(doc, path)
    for item in overrides:
        key, value = parse_override(item)
        values[key] = value
    return _validated(stage, values, str(path))


def parse_override(item: str) -> tuple[str, object]:
    """'train.n_s=300' -> ('train.n_s', 300); the value is read as TOML, else taken as a string."""
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
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]; known: {', '.join(SCHEMA)}")
        for key, value in table.items():
            values[f"{section}.{key}"] = value
    return values


def _validated(name: str, values: dict, source: str) -> StageConfig:
    where = f"{source}: " if source else ""
    out = {}
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if section not in SCHEMA:
            raise ConfigError(f"{where}unknown section [{section}] (key {dotted}); known: {', '.join(SCHEMA)}")
        if key not in SCHEMA[section]:
            known = ", ".join(SCHEMA[section])
            raise ConfigError(f"{where}unknown key {dotted}; [{section}] takes: {known}")
        out[dotted] = _typed(dotted, value, SCHEMA[section][key][0], where)
    for section, keys in SCHEMA.items():
        for key, (_, default) in keys.items():
            out.setdefault(f"{section}.{key}", default)
    _check_ranges(out, where)
    return StageConfig(name, MappingProxyType(out), source)


def _typed(dotted: str, value, kind: type, where: str):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{where}{dotted} must be {kind.__name__}; got {value!r} ({type(value).__name__})")
    return value


def _check_ranges(v: dict, where: str) -> None:
    def fail(msg):
        raise ConfigError(where + msg)

    if v["data.split"] not in SPLITS:
        fail(f"data.split must be one of {', '.join(SPLITS)}; got {v['data.split']!r}")
    if not 1 <= v["data.val_size"] < 50000:
        fail(f"data.val_size must be in 1..49999; got {v['data.val_size']}")
    if v["search.sampler"] not in SAMPLERS:
        fail(f"search.sampler must be one of {', '.join(SAMPLERS)}; got {v['search.sampler']!r}")
    if v["search.select"] not in SELECT_RULES:
        fail(f"search.select must be one of {', '.join(SELECT_RULES)}; got {v['search.select']!r}")
    if v["search.n_trials"] < 1:
        fail(f"search.n_trials must be ≥ 1; got {v['search.n_trials']}")
    lo, hi = v["search.lambda_min"], v["search.lambda_max"]
    if lo <= 0 or hi <= 0:
        fail(f"λ bounds must be > 0; got lambda_min={lo}, lambda_max={hi}")
    if lo >= hi:
        fail(f"search.lambda_min must be < search.lambda_max; got {lo} ≥ {hi}")
    if v["search.widen"] < 0:
        fail(f"search.widen must be ≥ 0; got {v['search.widen']}")
    if v["train.lambda"] < 0:
        fail(f"train.lambda must be ≥ 0; got {v['train.lambda']}")
    for key in ("model.hidden", "train.batch_size", "train.n_s", "train.cycles", "train.checkpoints_per_cycle"):
        if v[key] < 1:
            fail(f"{key} must be ≥ 1; got {v[key]}")
    if not 0 < v["train.eta_min"] <= v["train.eta_max"]:
        fail(f"need 0 < train.eta_min ≤ train.eta_max; got {v['train.eta_min']}, {v['train.eta_max']}")
