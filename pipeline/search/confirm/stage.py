"""The confirm stage's loop: plan a round from the stored results, enqueue its pairs, train them, repeat.

Each (candidate, round) pair is an Optuna trial enqueued once and one MLflow child run, so reruns complete the
stage (from its last finished round), a killed pair is trained again, and parallel workers share the pairs.
What the stage began with (candidates, settings of the plan, the first seed) is recorded in the study when it is
created, and every later decision is computed from the study alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import optuna

from pipeline.errors import ConfigError, UserError
from pipeline.names import CLAIM_ATTR, RANK_ATTR, SEARCH_STAGES
from pipeline.search.confirm import agreement, halving, racing, report
from pipeline.search.confirm.candidates import Candidate, choose_candidates, near
from pipeline.search.confirm.paired import CORRECT_ARTIFACT, CORRECT_ATTR, decode, encode
from pipeline.search.confirm.racing import Decision, Training, decide, plan
from pipeline.search.results import n_val_of, trial_settings
from pipeline.search.stages import open_study, settle, settled_study, start_stage
from pipeline.session import Session
from pipeline.settings import legacy
from pipeline.settings.config import ConfirmSection, Settings
from pipeline.workers import FINISHED, LIVE, fault, is_surplus, run_once, tally

STAGE = "confirm"
CANDIDATES_ATTR, CHOSEN_ATTR, FOLDS_ATTR, PLAN_ATTR = "candidates", "chosen", "folds", "plan"
ROUND_ATTR, CANDIDATE_ATTR = "round", "candidate"


@dataclasses.dataclass
class ConfirmResult:
    decision: Decision
    rule: str
    complete: bool
    study_name: str
    parent_run_id: str

    @property
    def scores(self):
        return self.decision.scores


def run_confirm(session: Session, cfg: Settings) -> ConfirmResult:
    session.check_tracking()
    study = session.load_study(STAGE)
    if study is not None and CANDIDATES_ATTR in study.user_attrs:  # a rerun: the plan the stage began with
        cands, folds, c, seed0 = recorded_plan(study, cfg)
    else:
        c, seed0 = cfg.confirm, cfg.train.seed
        halving.check(c, cfg.train.cycles)
        folds = c.folds and cfg.data.split == "holdout"
        if folds:
            check_blocks(session, cfg, c.max_rounds)  # before anything is recorded
        for searched in SEARCH_STAGES:  # every worker ranks the same settled trials
            settled_study(session, searched)
        cands = choose_candidates(session, c)
    first = sum(len(entrants) for _, entrants in next_rounds(0, len(cands), c, []))
    cfg = cfg.replace({"search.n_trials": first, "search.pruner": "none"})
    study, created = open_study(session, STAGE, cfg)
    if created:
        study.set_user_attr(FOLDS_ATTR, folds)
        study.set_user_attr(PLAN_ATTR, dataclasses.asdict(c) | {"seed": seed0})
        study.set_user_attr(CANDIDATES_ATTR, json.dumps([dataclasses.asdict(x) for x in cands]))
    context = start_stage(session, study, STAGE, cfg, suggester(cands, seed0, c.max_rounds, folds, halving.columns(c)),
                        frozenset({"train.lambda"}), {"confirm.candidates": json.dumps([x.settings for x in cands])})
    context = dataclasses.replace(context, after=record_correctness, enqueued=True)
    used, r, result = 0, 0, None
    while batch := next_rounds(r, len(cands), c, stored(study, cands, seed0)):
        used += sum(len(entrants) for _, entrants in batch)
        study.set_user_attr("n_trials", max(used, study.user_attrs.get("n_trials", 0)))
        wanted = [pair(cands[i], i, q, seed0, folds, halving.round_settings(c, q)) for q, entrants in batch
                  for i in entrants]

        def refill(wanted=wanted):  # two workers enqueuing a round at once: each pair's key trains once (the claim)
            enqueue_missing(study, wanted)

        result = settle(session, study, dataclasses.replace(context, cfg=cfg.replace({"search.n_trials": used})), used,
                        lambda close: finish(session, study, context.parent_run_id, cands, c, seed0, close), refill)
        r = batch[-1][0] + 1
    return result or finish(session, study, context.parent_run_id, cands, c, seed0)


def next_rounds(r: int, k: int, c: ConfirmSection, trainings: list[Training]) -> list[tuple[int, list[int]]]:
    """(round, candidates) to train next: a grid's rounds all at once (they depend on nothing, and the workers
    then never wait at a round's end), a race's next round alone."""
    rounds = range(r, c.max_rounds) if c.strategy == "grid" else range(r, min(r + 1, c.max_rounds))
    return [(q, entrants) for q in rounds if (entrants := plan(q, k, c, trainings))]


def recorded_plan(study: optuna.Study, cfg: Settings) -> tuple[list[Candidate], bool, ConfirmSection, int]:
    cands = [Candidate(**x) for x in json.loads(study.user_attrs[CANDIDATES_ATTR])]
    folds = study.user_attrs.get(FOLDS_ATTR, False)
    saved = dict(study.user_attrs.get(PLAN_ATTR) or {"k": len(cands), "seeds": cfg.confirm.seeds})
    seed0 = saved.pop("seed", cfg.train.seed)
    return cands, folds, dataclasses.replace(cfg.confirm, **saved), seed0


def check_blocks(session: Session, cfg: Settings, rounds: int) -> None:
    """Every round validates on its own block of the holdout: fail before anything is recorded."""
    data = session.dataset(cfg.data.split, cfg.data.val_size, cfg.data.val_fold, cfg.data.whitening)
    total = len(data.y_train) + len(data.y_val)
    need = rounds * cfg.data.val_size
    if need > total:
        raise ConfigError(f"confirm.folds validates each round on its own block of data.val_size "
                          f"{cfg.data.val_size} images: {rounds} rounds need {need}, the training batches hold "
                          f"{total}; lower confirm.seeds (grid) or confirm.budget (race), or data.val_size, or "
                          "set confirm.folds = false")


def pair(cand: Candidate, i: int, r: int, seed0: int, folds: bool, extra: dict | None = None) -> tuple[dict, dict]:
    """(Optuna params, user attrs) of candidate i's training in round r: seed seed0 + r, block r (with halving,
    the round's length); its key."""
    values = cand.settings | {"train.seed": seed0 + r} | ({"data.val_fold": r} if folds else {}) | (extra or {})
    return {k.partition(".")[2]: v for k, v in values.items()}, {ROUND_ATTR: r, CANDIDATE_ATTR: i,
                                                                  CLAIM_ATTR: pair_key(i, r)}


def pair_key(i: int, r: int) -> str:
    return f"pair {i}/{r}"


def suggester(cands: list[Candidate], seed0: int, rounds: int, folds: bool, extra: dict | None = None):
    """Optuna distributions spanning the candidates, so an enqueued pair's values come back as they are."""
    columns = {key: [cand.settings[key] for cand in cands] for key in cands[0].settings} | (extra or {})
    columns["train.seed"] = [seed0, seed0 + max(rounds - 1, 0)]
    if folds:
        columns["data.val_fold"] = [0, max(rounds - 1, 0)]

    def suggest(trial: optuna.Trial) -> dict:
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


def enqueue_missing(study: optuna.Study, wanted: list[tuple[dict, dict]]) -> None:
    """Enqueue every pair whose key no live trial holds: all of a round the first time, a killed one after."""
    held = {t.user_attrs.get(CLAIM_ATTR) for t in study.get_trials(deepcopy=False, states=LIVE)}
    for k, (params, attrs) in enumerate(wanted):
        if attrs[CLAIM_ATTR] not in held:
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        if k == 0:
            fault("enqueue")


def record_correctness(trial: optuna.Trial, run, data, result) -> None:
    """Which validation images the trained network gets right: packed bits on the trial and as the run's artifact."""
    from model.network import scores

    correct = scores(result.params, data.X_val)[1].argmax(axis=1) == data.y_val
    trial.set_user_attr(CORRECT_ATTR, encode(correct))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CORRECT_ARTIFACT
        np.save(path, np.packbits(correct))
        run.tracker.client.log_artifact(run.run_id, str(path))


def stored(study: optuna.Study, cands: list[Candidate], seed0: int) -> list[Training]:
    """The finished trainings, by candidate and round (a diverged one: NaN, no correctness)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        settings = trial_settings(t)
        seed = settings.pop("train.seed", seed0)
        settings.pop("data.val_fold", None)
        settings.pop("train.cycles", None)  # halving: the round's length
        i = t.user_attrs.get(CANDIDATE_ATTR)
        if i is None:  # a trial of an earlier confirm stage: its candidate by its settings
            i = next((j for j, cand in enumerate(cands) if near(settings, cand.settings, 0.0)), None)
        if i is None or is_surplus(t):
            continue
        r = t.user_attrs.get(ROUND_ATTR, seed - seed0)
        ok = t.state == optuna.trial.TrialState.COMPLETE
        bits = t.user_attrs.get(CORRECT_ATTR)
        correct = decode(bits, n_val_of(t)) if ok and bits else None
        out.append(Training(i, r, t.value if ok else math.nan, correct))
    return out


def finish(session: Session, study: optuna.Study, parent: str, cands: list[Candidate], c: ConfirmSection,
           seed0: int, close: bool = True) -> ConfirmResult:
    """The scores; once complete, the choice is recorded in the study (the same by whichever worker records it),
    and with `close` the stage run gets the table, the figure and decision.md."""
    trainings = stored(study, cands, seed0)
    n_val = next((n_val_of(t) for t in study.get_trials(deepcopy=False)), legacy.N_VAL)
    decision = decide(cands, trainings, c.select, c, n_val)
    complete = tally(study).running == 0 and racing.complete(len(cands), c, trainings)
    if complete and decision.chosen is not None and CHOSEN_ATTR not in study.user_attrs:
        study.set_user_attr(CHOSEN_ATTR, decision.chosen)
        study.set_user_attr(RANK_ATTR, agreement.record(decision, c))
    if close and complete and decision.chosen is not None:
        run_once(session, f"close {study.study_name} after {len(trainings)}",
                 lambda: close_run(session, study, parent, decision, c))
    return ConfirmResult(decision, c.select, complete, study.study_name, parent)


def close_run(session: Session, study: optuna.Study, parent: str, decision: Decision, c: ConfirmSection) -> None:
    """The stage run's table, figure and decision.md; FINISHED (unless a dead closer got that far)."""
    if session.tracker.status(parent) != "FINISHED":
        report.record(session.tracker, parent, study.study_name, decision, c)
        fault("close")
        session.tracker.set_status(parent, "FINISHED")


def chosen_settings(session: Session) -> tuple[dict, str] | None:
    """The confirm stage's choice and a line saying where it came from; None when there is no confirm stage."""
    study = settled_study(session, STAGE)
    if study is None:
        return None
    if CHOSEN_ATTR not in study.user_attrs:
        done, target = tally(study).finished, study.user_attrs.get("n_trials", "?")
        raise UserError(f"the confirm stage is incomplete ({done} of {target} trainings finished): run "
                        "`hpsearch search confirm` to complete it, or train-final --no-confirm")
    return study.user_attrs[CHOSEN_ATTR], f"confirm stage's choice ({study.study_name})"
