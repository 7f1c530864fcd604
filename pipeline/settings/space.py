"""Search spaces: the [space] table of a study file, how a trial samples it, and how the fine stage
refines it around the coarse results.

    [space]
    "train.lambda"  = { low = 1e-5, high = 1e-1, log = true }   # float
    "train.n_s"     = { low = 200, high = 800 }                 # int (integers)
    "model.hidden"  = { choices = [50, 100, 200, 400] }         # categorical

Each key is a setting of the [model] or [train] section, or one of the [data] section's whitening settings.
Optuna names a dimension by the setting's own key ("lambda", "hidden"), so studies and MLflow params read like
the settings files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pipeline.errors import ConfigError

SEARCHABLE = ("model", "train")  # the sections a space may search
# and the data settings it may: how the input is whitened (never the split, which would change what is scored)
SEARCHABLE_DATA = ("data.whiten", "data.whiten_eps", "data.whiten_keep")


def searchable(key: str) -> bool:
    return key.partition(".")[0] in SEARCHABLE or key in SEARCHABLE_DATA


@dataclass(frozen=True)
class Dimension:
    key: str  # the setting, "train.lambda"
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    @property
    def name(self) -> str:
        """The Optuna parameter and MLflow param: the setting's own key."""
        return self.key.partition(".")[2]

    def suggest(self, trial):
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self):
        """The Optuna distribution `suggest` samples from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        kind = FloatDistribution if self.kind == "float" else IntDistribution
        return kind(self.low, self.high, log=self.log)

    def contains(self, value) -> bool:
        """Whether a value is one this dimension can draw (its type, inside its range or among its choices)."""
        if self.kind == "categorical":
            return value in self.choices and not isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float) or (self.kind == "int" and value % 1):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        fmt = "{:.3g}" if self.kind == "float" else "{:d}"
        scale = "log-uniform" if self.log else "uniform"
        return f"{self.name} {fmt.format(self.low)} .. {fmt.format(self.high)} ({scale})"


Space = dict[str, Dimension]  # setting key -> dimension, in the file's order


def parse(table: Mapping, types: Mapping[str, type], where: str = "") -> Space:
    """The [space] table, checked against the settings it names (`types`: "section.key" -> type)."""
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{where}[space] must declare at least one setting, e.g. "
                          '"train.lambda" = { low = 1e-5, high = 1e-1, log = true }')
    space = {key: _dimension(key, spec, types, where) for key, spec in table.items()}
    names = [d.name for d in space.values()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}[space] names one key twice in different sections: {', '.join(space)}")
    return space


def _dimension(key: str, spec, types: Mapping[str, type], where: str) -> Dimension:
    def fail(msg):
        raise ConfigError(f"{where}[space] {key}: {msg}")

    if not searchable(key) or key not in types:
        known = ", ".join(k for k in types if searchable(k))
        fail(f"unknown setting; a space may search: {known}")
    kind = types[key]
    if not isinstance(spec, Mapping):
        fail("must be a table: { low, high, log } or { choices = [...] }")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            fail("a categorical dimension takes only choices")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail("choices must be a non-empty list")
        for c in choices:
            if not _fits(c, kind):
                fail(f"choice {c!r} is not a {kind.__name__}, the type of {key}")
        return Dimension(key, "categorical", choices=tuple(float(c) if kind is float else c for c in choices))
    unknown = set(spec) - {"low", "high", "log"}
    if unknown or not {"low", "high"} <= set(spec):
        fail("needs low and high (and optionally log), or choices")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if kind not in (int, float):
        fail(f"{key} is a {kind.__name__}: search it with choices")
    if not isinstance(log, bool):
        fail(f"log must be true or false; got {log!r}")
    for bound in (low, high):
        if not _fits(bound, kind):
            fail(f"bound {bound!r} is not a {kind.__name__}, the type of {key}")
    if low >= high:
        fail(f"low must be < high; got {low} ≥ {high}")
    if log and low <= 0:
        fail(f"a log-scale range needs low > 0; got {low}")
    return Dimension(key, "int" if kind is int else "float", float(low) if kind is float else low,
                     float(high) if kind is float else high, log)


def _fits(value, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def suggest(space: Space, trial) -> dict[str, object]:
    """Setting key -> the value this trial draws."""
    return {key: dim.suggest(trial) for key, dim in space.items()}


def to_json(space: Space) -> str:
    return json.dumps([asdict(d) for d in space.values()])


def from_json(text: str) -> Space:
    dims = [Dimension(**{**d, "choices": None if d["choices"] is None else tuple(d["choices"])})
            for d in json.loads(text)]
    return {d.key: d for d in dims}


# ---- coarse → fine ---------------------------------------------------------------------------------
def refine_top2(space: Space, top: list[Mapping[str, object]], widen: float) -> Space:
    """The report's rule, for every dimension: the range spanned by the two best trials' values, widened
    by ±widen in log10 for log-scale dimensions (±widen × the coarse range otherwise, kept inside it);
    categorical dimensions keep the choices of the two best."""
    fine = {}
    for key, dim in space.items():
        values = [t[key] for t in top]
        if dim.kind == "categorical":
            fine[key] = Dimension(key, "categorical", choices=tuple(c for c in dim.choices if c in values))
            continue
        lo, hi = min(values), max(values)
        if dim.log:
            lo, hi = lo / 10**widen, hi * 10**widen
        else:
            pad = widen * (dim.high - dim.low)
            lo, hi = max(dim.low, lo - pad), min(dim.high, hi + pad)
        fine[key] = _bounded(dim, lo, hi)
    return fine


def refine_region(space: Space, trials: list[tuple[Mapping[str, object], float]], half_width: float) -> Space:
    """Centre on the best-scoring region instead of the two best points: each trial's score is the mean
    accuracy of the trials within ±half_width (decades for log dimensions, fractions of the range
    otherwise) around it, and the range is ±half_width around the trial with the best such mean. A region
    needs two trials at least, so one lucky draw alone is not a region (unless no trial has a neighbour)."""
    def near(a, b) -> bool:
        return all(_distance(dim, a[key], b[key]) <= half_width for key, dim in space.items()
                   if dim.kind != "categorical")

    def region(values) -> list[float]:
        return [acc for v, acc in trials if near(values, v)]

    eligible = [t for t in trials if len(region(t[0])) >= 2] or trials
    centre = max(eligible, key=lambda t: (sum(region(t[0])) / len(region(t[0])), t[1]))[0]
    fine = {}
    for key, dim in space.items():
        if dim.kind == "categorical":
            fine[key] = Dimension(key, "categorical", choices=(centre[key],))
        elif dim.log:
            fine[key] = _bounded(dim, centre[key] / 10**half_width, centre[key] * 10**half_width)
        else:
            pad = half_width * (dim.high - dim.low)
            fine[key] = _bounded(dim, max(dim.low, centre[key] - pad), min(dim.high, centre[key] + pad))
    return fine


def _distance(dim: Dimension, a, b) -> float:
    if dim.log:
        return abs(math.log10(a) - math.log10(b))
    return abs(a - b) / (dim.high - dim.low)


def _bounded(dim: Dimension, lo: float, hi: float) -> Dimension:
    if dim.kind == "int":
        lo, hi = max(1, math.floor(lo)), math.ceil(hi)
        hi = max(hi, lo + 1)  # a range of one value is a constant, not a dimension
        return Dimension(dim.key, "int", lo, hi, dim.log)
    return Dimension(dim.key, "float", lo, hi, dim.log)
