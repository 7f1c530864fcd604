"""hpsearch 0.1, in one place: what its settings files, studies and registered models hold differently.

Each caller asks here in one line, so that when no 0.1 file or store is left to read, this module and those
lines are all there is to delete.
"""

from __future__ import annotations

from pipeline.names import LAMBDA
from pipeline.settings import space

MOVED = {  # keys of hpsearch 0.1, and where they went
    "search.lambda_min": 'the λ line of [space]: "train.lambda" = { low = 1e-5, high = 1e-1, log = true }',
    "search.lambda_max": 'the λ line of [space]: "train.lambda" = { low = 1e-5, high = 1e-1, log = true }',
    "search.widen": "[fine] widen",
}
LAMBDA_BOUNDS = ("lambda_min", "lambda_max")  # the user attrs a 0.1 fine study held its λ range in
N_VAL = 5000  # the validation images of a 0.1 trial, which did not record them: the searches' 45k/5k split


def trial_settings(trial) -> dict[str, object]:
    """A 0.1 trial's settings: it searched λ alone and recorded it as a param only."""
    return {"train.lambda": trial.params[LAMBDA]}


def fine_space(study) -> space.Space | None:
    """A 0.1 fine study's space, from its λ bounds; None for a study of this version."""
    if LAMBDA_BOUNDS[0] not in study.user_attrs:
        return None
    lo, hi = (study.user_attrs[key] for key in LAMBDA_BOUNDS)
    return {"train.lambda": space.Dimension("train.lambda", "float", lo, hi, True)}


def coarse_space(study) -> space.Space:
    """A 0.1 coarse study's space: λ alone, as its first trial's distribution says."""
    dist = study.trials[0].distributions[LAMBDA]
    return {"train.lambda": space.Dimension("train.lambda", "float", dist.low, dist.high, dist.log)}


def record_lambda_bounds(study, searched: space.Space) -> None:
    """A float λ range also as 0.1 recorded it, so a 0.1 worker on the same store still reads the fine range."""
    if "train.lambda" in searched and searched["train.lambda"].kind == "float":
        bounds = (searched["train.lambda"].low, searched["train.lambda"].high)
        for key, value in zip(LAMBDA_BOUNDS, bounds, strict=True):
            study.set_user_attr(key, value)


def logged_model(source: str) -> bool:
    """A champion 0.1 registered through a LoggedModel (its source a models:/ URI, not the run's artifact)."""
    return source.startswith("models:/")
