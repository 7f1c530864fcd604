"""The TOML sections of a stage's settings: one frozen dataclass per section, its keys, types, defaults and the
rules it owns (the search's, the fine space's, the confirm stage's). `config` puts them together into Settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model import cifar10
from model.train import TrainSettings
from model.whiten import WhitenSpec

STUDIES = Path("studies")
SAMPLERS = ("random", "tpe", "qmc")
SELECT_RULES = ("best", "one-se")
PRUNERS = ("median", "asha", "hyperband", "none")
FINE_RULES = ("top2", "region")
CONFIRM_RULES = ("best-mean", "one-se", "fit")
CONFIRM_STRATEGIES = ("grid", "race", "halving")
CONFIRM_PLACEMENTS = ("top", "spread")
MAX_TRAININGS = 200  # confirm.budget: each is a whole training at the final's budget; more is a typo


def _one_of(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


_WHITEN = WhitenSpec()  # whitening's own defaults: written once, in model.whiten


@dataclass(frozen=True)
class DataSection:
    split: str = "holdout"  # "exercise" (batch 1 / batch 2 / test) or "holdout"
    val_size: int = 5000  # holdout: the last val_size training images validate
    val_fold: int = 0  # holdout: 0 = the last val_size images, 1 = the block before them, ...
    # Whitening of the normalised input, fitted on the training part: "none" | "pca" | "zca" (see model.whiten).
    whiten: str = _WHITEN.kind
    whiten_eps: float = _WHITEN.eps  # added to every eigenvalue of the training covariance
    whiten_keep: float = _WHITEN.keep  # pca: the fraction of the variance kept

    def __post_init__(self):
        try:
            cifar10.check_split(self.split, self.val_size, self.val_fold)
        except cifar10.DataError as e:
            raise ValueError(str(e)) from None
        self.whitening  # noqa: B018 -- the whitening rules live with the whitening

    @property
    def whitening(self) -> WhitenSpec:
        return WhitenSpec(self.whiten, self.whiten_eps, self.whiten_keep)


_DEFAULT = TrainSettings()  # the training's own defaults: written once, in model.train


@dataclass(frozen=True)
class ModelSection:
    hidden: int = _DEFAULT.hidden
    dropout: float = _DEFAULT.dropout


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = _DEFAULT.batch_size
    eta_min: float = _DEFAULT.eta_min
    eta_max: float = _DEFAULT.eta_max
    n_s: int = _DEFAULT.n_s
    cycles: int = _DEFAULT.cycles
    checkpoints_per_cycle: int = _DEFAULT.checkpoints_per_cycle
    seed: int = _DEFAULT.seed
    lam: float = field(default=_DEFAULT.lam, metadata={"key": "lambda"})
    train_eval_size: int = _DEFAULT.train_eval_size
    augment: bool = _DEFAULT.augment
    shift: int = _DEFAULT.shift
    tta_flip: bool = _DEFAULT.tta_flip
    label_smoothing: float = _DEFAULT.label_smoothing
    average_cycles: int = _DEFAULT.average_cycles


@dataclass(frozen=True)
class SearchSection:
    n_trials: int = 8
    sampler: str = "random"
    pruner: str = "median"
    prune: bool = True  # false: no pruning whatever `pruner` says (kept from hpsearch 0.1)
    stratify: bool = True
    select: str = "best"

    def __post_init__(self):
        _one_of("search.sampler", self.sampler, SAMPLERS)
        _one_of("search.pruner", self.pruner, PRUNERS)
        _one_of("search.select", self.select, SELECT_RULES)
        if self.n_trials < 1:
            raise ValueError(f"search.n_trials must be ≥ 1; got {self.n_trials}")

    @property
    def pruning(self) -> str:
        return self.pruner if self.prune else "none"


@dataclass(frozen=True)
class FineSection:
    rule: str = "top2"  # the report's: the two best coarse trials, widened by ±widen
    widen: float = 0.25  # top2: log10 margin around the two best
    half_width: float = 0.5  # region: ± this many decades around the best-scoring region

    def __post_init__(self):
        _one_of("fine.rule", self.rule, FINE_RULES)
        if self.widen < 0 or self.half_width <= 0:
            raise ValueError(f"need fine.widen ≥ 0 and fine.half_width > 0; got {self.widen}, {self.half_width}")


@dataclass(frozen=True)
class ConfirmSection:
    k: int = 3  # candidates
    seeds: int = 2  # grid: rounds, every candidate once a round with seed train.seed + round
    select: str = "best-mean"  # "one-se": the largest λ within one SE of the best; "fit": a quadratic's peak
    folds: bool = True  # round i validates on holdout block i (data.val_fold): scores span rounds × val_size images
    min_gap: float = 0.25  # decades: candidates' log-scale values differ by at least this much from each other
    strategy: str = "grid"  # "race": round 1 trains every candidate, clear losers stop, survivors go on
    budget: int = 6  # race: trainings in all; halving: in trainings of the last round's length (cost in cycles)
    z: float = 2.0  # race: a candidate stops when the best beats it by z paired standard errors
    placement: str = "top"  # "spread": k λ evenly in log10 over the searches' tie, instead of their top trials
    span: float = 1.0  # spread: decades below the largest tied λ
    reach: float = 0.0  # spread: decades the window is moved up (the final budget wants more λ than the search)
    first_cycles: int = 1  # halving: round 1's training length in cycles; each later round doubles it
    rungs: int = 2  # halving: rounds, the best half (at least two) going on; the last trains train.cycles

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"confirm.k must be ≥ 1; got {self.k}")
        if self.seeds < 1:
            raise ValueError(f"confirm.seeds must be ≥ 1; got {self.seeds}")
        if not 0 <= self.min_gap <= 3:
            raise ValueError(f"confirm.min_gap must be a number of decades in 0..3; got {self.min_gap}")
        _one_of("confirm.select", self.select, CONFIRM_RULES)
        _one_of("confirm.strategy", self.strategy, CONFIRM_STRATEGIES)
        _one_of("confirm.placement", self.placement, CONFIRM_PLACEMENTS)
        if self.first_cycles < 1 or self.rungs < 1:
            raise ValueError(f"need confirm.first_cycles ≥ 1 and rungs ≥ 1; got {self.first_cycles}, {self.rungs}")
        if self.strategy == "halving" and self.budget < self.k * self.first_cycles / self.last_cycles:
            raise ValueError(f"confirm.budget {self.budget} cannot pay round 1: {self.k} candidates at "
                             f"{self.first_cycles} of {self.last_cycles} cycles")
        if self.strategy == "race" and self.budget < self.k:
            raise ValueError(f"confirm.budget {self.budget} is smaller than confirm.k {self.k}: round 1 trains "
                             "every candidate once")
        if self.budget > MAX_TRAININGS:
            raise ValueError(f"confirm.budget must be at most {MAX_TRAININGS} trainings; got {self.budget}")
        if self.z <= 0 or not 0 < self.span <= 5 or not -3 <= self.reach <= 3:
            raise ValueError(f"need confirm.z > 0, span in (0, 5] and reach in -3..3 decades; got {self.z}, "
                             f"{self.span}, {self.reach}")

    @property
    def last_cycles(self) -> int:
        """halving: the last round's cycles (first_cycles doubled rungs − 1 times), which must be train.cycles."""
        return self.first_cycles * 2 ** (self.rungs - 1)

    @property
    def max_rounds(self) -> int:
        """Rounds the stage may run, each on its own block: race's later rounds train at least two."""
        if self.strategy == "halving":
            return self.rungs
        return self.seeds if self.strategy == "grid" else 1 + max(0, self.budget - self.k) // 2
