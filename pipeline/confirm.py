"""The confirm stage: the k best distinct searched settings, retrained with r seeds at a budget where λ
matters, scored by their mean validation accuracy ± a standard error; the choice goes to train-final.

The searches (n_s 200, batch 450) cannot tell λ apart: every λ up to 1e-2 lands within one standard
error of the best. Repeating the top candidates at the final's schedule resolves them. Each (candidate,
seed) pair is an Optuna trial enqueued once, so reruns complete the stage, a killed pair is retrained,
and parallel workers share the pairs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass

import optuna

from pipeline import plots
from pipeline.config import Settings
from pipeline.errors import ConfigError, UserError
from pipeline.names import LAMBDA, SEARCH_STAGES
from pipeline.objective import describe
from pipeline.results import best_trial, completed, standard_error, trial_settings
from pipeline.sampling import LIVE
from pipeline.session import Session
from pipeline.stages import open_study, settle, settled_study, start_stage
from pipeline.tracking import NOTE
from pipeline.workers import claim_enqueued, tally

STAGE = "confirm"
CANDIDATES_ATTR, CHOSEN_ATTR, FOLDS_ATTR = "candidates", "chosen", "folds"


@dataclass
class Candidate:
    settings: dict  # setting key -> value, without the seed
    origin: str  # "coarse trial 3"
    search_value: float  # its validation accuracy in the search


@dataclass
class Score:
    candidate: Candidate
    values: list[float]  # final validation accuracy per seed
    n_val: int  # validation images of one seed
    folds: int = 1  # distinct validation blocks among the seeds (confirm.folds: one per seed)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def se(self) -> float:
        """sqrt(s²/r + a(1−a)/(n_val·folds)): the spread over seeds plus the validation images' sampling noise,
        which repeating seeds on the same images does not average away, but validating on other blocks does."""
        seeds = statistics.variance(self.values) / len(self.values) if len(self.values) > 1 else 0.0
        return math.sqrt(seeds + standard_error(self.mean, self.n_val * self.folds) ** 2)


def candidates(session: Session, k: int, min_gap: float = 0.0) -> list[Candidate]:
    """The k best distinct settings over the completed coarse and fine trials (ties: coarse first, then the
    lower trial number); fewer when the searches hold fewer. When λ is searched, the second is the one-SE
    rule's pick (the largest λ within one standard error of the best), unless it is the best itself.

    Distinct: another value of some setting, where positive floats (λ, η) count as the same value when their
    log10 differ by less than min_gap decades. The searches' scores cannot tell λ apart (they tie within one
    standard error), so their top three often sit within a few percent of one another; the gap spreads the
    candidates over the tied region instead. The longer final budget needs more regularisation than the
    search's: the one-SE pick keeps the strongest tied λ among the candidates whatever the noise ranked first.
    """
    ranked = []
    for order, stage in enumerate(SEARCH_STAGES):
        study = session.load_study(stage)
        ranked += [(-t.value, order, t.number, stage, t) for t in (completed(study) if study else [])]
    ranked = [(stage, t) for *_, stage, t in sorted(ranked, key=lambda r: r[:3])]
    if ranked and all(LAMBDA in t.params for _, t in ranked):
        pick = trial_settings(best_trial(session, "one-se"))
        at = next((i for i, (_, t) in enumerate(ranked) if trial_settings(t) == pick), 0)
        ranked.insert(min(at, 1), ranked.pop(at))
    out: list[Candidate] = []
    for stage, t in ranked:
        settings = trial_settings(t)
        if not any(_near(settings, c.settings, min_gap) for c in out):
            out.append(Candidate(settings, f"{stage} trial {t.number}", t.value))
    if not out:
        raise UserError("no completed coarse or fine trial to confirm: run `hpsearch search coarse` (and fine) first")
    return out[:k]


def _near(a: dict, b: dict, gap: float) -> bool:
    """The same settings, up to less than gap decades in every positive float."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float) and x > 0 and y > 0:
            if abs(math.log10(x) - math.log10(y)) >= max(gap, 1e-12):
                return False
        elif x != y:
            return False
    return True


def pairs(cands: list[Candidate], seeds: list[int], folds: bool) -> list[dict]:
    """The trials of the stage: every candidate with every seed, as setting values. With folds the i-th seed
    validates on holdout block i, the same block for every candidate (their differences stay paired). Seed-major
    order: a worker's trials in a row share their data, which is loaded once."""
    return [c.settings | {"train.seed": s} | ({"data.val_fold": i} if folds else {})
            for i, s in enumerate(seeds) for c in cands]


def suggester(cands: list[Candidate], seeds: list[int], folds: bool):
    """Optuna distributions spanning the candidates, so an enqueued pair's values come back as they are."""
    columns = {key: [c.settings[key] for c in cands] for key in cands[0].settings} | {"train.seed": seeds}
    if folds:
        columns["data.val_fold"] = list(range(len(seeds)))

    def suggest(trial: optuna.Trial) -> dict:
        claim_enqueued(trial)
        values = {}
        for key, vals in columns.items():
            name = key.partition(".")[2]
            if all(isinstance(v, float) for v in vals):
                values[key] = trial.suggest_float(name, min(vals), max(vals), log=min(vals) > 0)
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                values[key] = trial.suggest_int(name, min(vals), max(vals))
            else:
                values[key] = trial.suggest_categorical(name, sorted(set(vals), key=str))
        return values

    return suggest


def run_confirm(session: Session, cfg: Settings):
    """Train every (candidate, seed) pair once; then score, choose and record. Returns the ConfirmResult."""
    seeds = [cfg.train.seed + i for i in range(cfg.confirm.seeds)]
    session.check_tracking()
    study = session.load_study(STAGE)
    if study is not None and CANDIDATES_ATTR in study.user_attrs:  # a rerun: the pairs the stage began with
        cands = [Candidate(**c) for c in json.loads(study.user_attrs[CANDIDATES_ATTR])]
        folds = study.user_attrs.get(FOLDS_ATTR, False)
    else:
        for searched in SEARCH_STAGES:  # every worker ranks the same settled trials
            settled_study(session, searched)
        cands = candidates(session, cfg.confirm.k, cfg.confirm.min_gap)
        folds = cfg.confirm.folds and cfg.data.split == "holdout"
        if folds:  # every seed's block must exist: fail before anything is recorded
            data = session.dataset(cfg.data.split, cfg.data.val_size, cfg.data.val_fold, cfg.data.whitening)
            total = len(data.y_train) + len(data.y_val)
            need = len(seeds) * cfg.data.val_size
            if need > total:
                raise ConfigError(f"confirm.folds validates each seed on its own block of data.val_size "
                                  f"{cfg.data.val_size} images: {len(seeds)} seeds need {need}, the training "
                                  f"batches hold {total}; lower confirm.seeds or data.val_size, or set "
                                  "confirm.folds = false")
    n = len(cands) * len(seeds)
    cfg = cfg.replace({"search.n_trials": n, "search.pruner": "none"})
    study, created = open_study(session, STAGE, cfg)
    if created:
        study.set_user_attr(FOLDS_ATTR, folds)
        study.set_user_attr(CANDIDATES_ATTR, json.dumps([dataclasses.asdict(c) for c in cands]))
    stage = start_stage(session, study, STAGE, cfg, suggester(cands, seeds, folds), frozenset({"train.lambda"}),
                        {"confirm.candidates": json.dumps([c.settings for c in cands])})
    wanted = [{k.partition(".")[2]: v for k, v in p.items()} for p in pairs(cands, seeds, folds)]
    return settle(session, study, stage, n, lambda close: finish(session, study, stage.parent_run_id, cands, cfg, n,
                                                                 close), refill=lambda: enqueue_missing(study, wanted))


def enqueue_missing(study: optuna.Study, wanted: list[dict]) -> None:
    """Enqueue every pair that no live trial holds: all of them the first time, a killed one after."""
    held = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False, states=LIVE)]
    for params in wanted:
        if not any(_same(params, h) for h in held):
            study.enqueue_trial(params)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) if isinstance(a[k], float)
                                        else a[k] == b[k] for k in a)


@dataclass
class ConfirmResult:
    scores: list[Score]
    chosen: Score | None
    rule: str
    complete: bool
    study_name: str
    parent_run_id: str


def scores(study: optuna.Study, cands: list[Candidate]) -> list[Score]:
    out = []
    for c in cands:
        runs = [t for t in completed(study)
                if all(_close(trial_settings(t).get(k), v) for k, v in c.settings.items())]
        if runs:
            blocks = {trial_settings(t).get("data.val_fold", 0) for t in runs}
            out.append(Score(c, [t.value for t in runs], runs[0].user_attrs.get("n_val", 5000), len(blocks)))
    return out


def _close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-12) if isinstance(b, float) and isinstance(a, float) else a == b


def choose(scored: list[Score], rule: str) -> Score | None:
    """best-mean: the highest mean. one-se: the largest λ whose mean is within one standard error of the best
    (the one-standard-error rule, which leans to the stronger regularisation)."""
    best = max(scored, key=lambda s: s.mean, default=None)
    if best is None or rule == "best-mean" or LAMBDA not in {k.partition(".")[2] for k in best.candidate.settings}:
        return best
    tied = [s for s in scored if s.mean >= best.mean - best.se]
    return max(tied, key=lambda s: s.candidate.settings["train.lambda"])


def finish(session: Session, study, parent: str, cands: list[Candidate], cfg: Settings, n: int,
           close: bool = True) -> ConfirmResult:
    """The scores; once complete, the choice is recorded in the study (the same by whichever worker records it),
    and with `close` the stage run gets the table, the figure and the chosen λ."""
    tracker = session.tracker
    done = tally(study)
    complete = done.finished >= n and done.running == 0
    scored = scores(study, cands)
    chosen = choose(scored, cfg.confirm.select)
    if complete and chosen is not None and CHOSEN_ATTR not in study.user_attrs:
        study.set_user_attr(CHOSEN_ATTR, chosen.candidate.settings)
    if close and complete and chosen is not None and tracker.status(parent) != "FINISHED":
        table = candidate_table(scored, chosen)
        tracker.log_text(parent, table.to_csv(index=False), "candidates.csv")
        tracker.log_figure(parent, plots.candidates(table, f"{study.study_name}: mean ± SE over seeds"),
                           "candidates.png")
        metrics = {"chosen_mean_val_accuracy": chosen.mean, "chosen_se": chosen.se}
        if "train.lambda" in chosen.candidate.settings:
            metrics["chosen_lambda"] = chosen.candidate.settings["train.lambda"]
        tracker.log_metrics(parent, metrics)
        tracker.set_tags(parent, {"chosen": describe(chosen.candidate.settings), "select": cfg.confirm.select,
                                  NOTE: f"confirm: chose {describe(chosen.candidate.settings)}, mean val acc "
                                        f"{chosen.mean:.4f} ± {chosen.se:.4f} over {len(chosen.values)} seeds"})
        tracker.set_status(parent, "FINISHED")
    return ConfirmResult(scored, chosen, cfg.confirm.select, complete, study.study_name, parent)


def candidate_table(scored: list[Score], chosen: Score):
    import pandas as pd

    rows = [{**{k.partition(".")[2]: v for k, v in s.candidate.settings.items()}, "mean": s.mean, "se": s.se,
             "n": len(s.values), "search_val_accuracy": s.candidate.search_value, "origin": s.candidate.origin,
             "chosen": s is chosen} for s in scored]
    return pd.DataFrame(rows)


def chosen_settings(session: Session) -> tuple[dict, str] | None:
    """The confirm stage's choice and a line saying where it came from; None when there is no confirm stage."""
    study = settled_study(session, STAGE)
    if study is None:
        return None
    if CHOSEN_ATTR not in study.user_attrs:
        done, target = tally(study).finished, study.user_attrs.get("n_trials", "?")
        raise UserError(f"the confirm stage is incomplete ({done} of {target} trainings finished): run "
                        "`hpsearch search confirm` to complete it, or train-final --no-confirm")
    chosen = study.user_attrs[CHOSEN_ATTR]
    return chosen, f"confirm stage's choice ({study.study_name})"
