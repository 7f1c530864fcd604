"""Samplers and pruners: seeded per trial, so reruns repeat their draws and parallel workers never collide."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import optuna

from pipeline.settings.config import Settings
from pipeline.workers.claim import LIVE


def trial_seed(seed: int, study: optuna.Study, trial_number: int, salt: str = "") -> list[int]:
    """A seed for one draw of one trial: the same in every process and every rerun, different per trial."""
    return [seed, zlib.crc32(f"{study.study_name}/{salt}".encode()), trial_number]


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search where trial k of a study draws from a generator seeded by (seed, study, k).

    A plain seeded RandomSampler repeats its sequence in every worker process (parallel workers would
    all draw the same λ) and depends on the order trials run in; seeding each draw by the trial makes a
    search reproducible, and parallel workers never repeat each other.

    With `strata` = n, the (log-)range of a float is cut into n equal slices and each trial draws
    uniformly inside a slice that no other live trial (finished, running or queued) occupies, chosen at
    random: a Latin hypercube over the trials that count. A failed trial frees its slice for the next.
    """

    def __init__(self, seed: int, strata: int = 1):
        super().__init__(seed=seed)
        self.seed, self.strata = seed, max(1, strata)

    def sample_independent(self, study, trial, param_name, param_distribution):
        dist = param_distribution
        if not (isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is None):
            rng = np.random.default_rng(trial_seed(self.seed, study, trial.number, param_name))
            return optuna.samplers.RandomSampler(seed=int(rng.integers(2**31))).sample_independent(
                study, trial, param_name, dist)
        lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
        to_unit = (lambda v: (math.log(v) - lo) / (hi - lo)) if dist.log else (lambda v: (v - lo) / (hi - lo))
        rng = np.random.default_rng(trial_seed(self.seed, study, trial.number, param_name))
        stratum = 0
        if self.strata > 1:
            taken = {min(self.strata - 1, int(to_unit(t.params[param_name]) * self.strata))
                     for t in study.get_trials(deepcopy=False, states=LIVE)
                     if t.number != trial.number and t.distributions.get(param_name) == dist}
            free = [s for s in range(self.strata) if s not in taken] or list(range(self.strata))
            stratum = free[int(rng.integers(len(free)))]
        u = (stratum + rng.random()) / self.strata
        value = lo + u * (hi - lo)
        return min(dist.high, max(dist.low, math.exp(value) if dist.log else value))


class PerTrial(optuna.samplers.BaseSampler):
    """A fresh sampler for every trial, seeded by (seed, study, trial number).

    TPE (and QMC's first, independent draw) seeded once per process start from the same state in every
    worker: worker k's n-th trial would draw the same λ as every other worker's n-th trial (Optuna issue
    #4714). TPE keeps no state between trials besides its generator, so a per-trial instance loses nothing.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self.make, self.seed = make, seed
        self.current = make(seed)

    def before_trial(self, study, trial):
        seed = int(np.random.default_rng(trial_seed(self.seed, study, trial.number)).integers(2**31))
        self.current = self.make(seed)
        self.current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.current.after_trial(study, trial, state, values)


def make_sampler(cfg: Settings) -> optuna.samplers.BaseSampler:
    kind, seed = cfg.search.sampler, cfg.train.seed
    if kind == "tpe":
        return PerTrial(lambda s: optuna.samplers.TPESampler(seed=s), seed)
    if kind == "qmc":  # the points follow the trial number; only the first trial's draw is independent
        return optuna.samplers.QMCSampler(scramble=True, seed=seed,
                                          independent_sampler=TrialSeededRandomSampler(seed))
    return TrialSeededRandomSampler(seed, strata=cfg.search.n_trials if cfg.search.stratify else 1)


def make_pruner(cfg: Settings) -> optuna.pruners.BasePruner:
    """The stage's pruner, judging in update steps but only ever asked at the end of a cycle.

    Accuracy swings with the cyclical η: trials are comparable only at the ends of cycles (η at its
    minimum), so the objective asks the pruner there and nowhere else, and never at the last step.
    "median": strongly regularised networks lag early and catch up late, so judging after the first cycle
    prunes exactly the large λ the search is looking for (measured on CIFAR-10): it waits until the end of
    the second-to-last cycle. "asha" and "hyperband" count their resource in cycles: the first rung is the
    end of the first cycle, the last is the whole schedule.
    """
    cycle, total = 2 * cfg.train.n_s, cfg.train_settings().total_steps
    kind = cfg.search.pruning
    if kind == "median":
        warmup = cycle * max(1, cfg.train.cycles - 1)
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup, interval_steps=cycle)
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cycle, reduction_factor=REDUCTION,
                                                      min_early_stopping_rate=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cycle, max_resource=total, reduction_factor=REDUCTION)
    return optuna.pruners.NopPruner()


REDUCTION = 3  # ASHA and Hyperband keep the best third at each rung (Optuna's default)
