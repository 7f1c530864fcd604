"""Warm starts: settings to try first (--enqueue FILE.toml), and another experiment's finished trials of the same
stage given to the sampler as completed trials (--from-experiment NAME).

    # warm.toml: each [[trial]] is tried first, in order; a setting left out is sampled as usual
    [[trial]]
    "train.lambda" = 0.003

    [[trial]]
    "train.lambda" = 0.0005

Imported trials carry `imported_from` = "<study>/<trial number>" and their values. They are what the sampler
learns from (TPE: past its startup trials, 10 by default); they do not count towards the stage's n_trials, are not
promoted, and are left out of its table, figures and importance: those show what this experiment trained.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline.errors import ConfigError, UserError
from pipeline.names import IMPORTED_ATTR, SETTINGS_ATTR, study_name
from pipeline.search.results import study_space
from pipeline.settings import toml
from pipeline.settings.space import Dimension

ENQUEUE_TABLE = "trial"


def is_imported(trial: optuna.trial.FrozenTrial) -> bool:
    return IMPORTED_ATTR in trial.user_attrs


def read_enqueue(path: Path, searched: dict[str, Dimension], n_trials: int) -> list[dict]:
    """The settings a FILE.toml lists, each a {setting key: value} checked against the stage's space."""
    try:
        doc = toml.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--enqueue file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --enqueue file {path}: {e}") from None
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    rows = doc.get(ENQUEUE_TABLE)
    if set(doc) != {ENQUEUE_TABLE} or not isinstance(rows, list) or not rows:
        raise ConfigError(f'{path} must list settings as [[{ENQUEUE_TABLE}]] tables, e.g. [[trial]] '
                          '"train.lambda" = 0.003')
    if len(rows) > n_trials:
        raise ConfigError(f"{path} lists {len(rows)} settings; the stage runs {n_trials} trials")
    return [_checked(row, searched, f"{path} [[{ENQUEUE_TABLE}]] {i + 1}") for i, row in enumerate(rows)]


def _checked(row: dict, searched: dict[str, Dimension], where: str) -> dict:
    if not row:
        raise ConfigError(f"{where}: empty; name at least one setting of the space ({', '.join(searched)})")
    for key, value in row.items():
        dim = searched.get(key)
        if dim is None:
            raise ConfigError(f"{where}: {key} is not searched by this stage; its space: {', '.join(searched)}")
        if not dim.contains(value):
            raise ConfigError(f"{where}: {key} = {value!r} is outside the stage's space ({dim.describe()})")
    return {key: int(v) if searched[key].kind == "int" else v for key, v in row.items()}


def enqueue_rows(study: optuna.Study, searched: dict[str, Dimension], rows: list[dict]) -> int:
    """Enqueue each row once (a rerun does not repeat one a trial already holds); returns how many were new."""
    before = len(study.get_trials(deepcopy=False))
    for row in rows:
        study.enqueue_trial({searched[key].name: value for key, value in row.items()}, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


def import_trials(study: optuna.Study, storage, experiment: str, stage: str, searched: dict[str, Dimension]) -> int:
    """Add the completed trials that `experiment`'s study of this stage trained, once; returns how many were added.
    The spaces must search the same settings the same way; a trial outside this stage's ranges is left out."""
    source = study_name(experiment, stage)
    if source == study.study_name:
        raise UserError(f"--from-experiment names this experiment itself ({experiment})")
    try:
        other = optuna.load_study(study_name=source, storage=storage)
    except KeyError:
        raise UserError(f"--from-experiment: no study {source!r} in this storage") from None
    if any(t.user_attrs.get(IMPORTED_ATTR, "").startswith(f"{source}/") for t in study.get_trials(deepcopy=False)):
        return 0  # imported by an earlier run of this stage
    theirs = study_space(other)
    if _shape(theirs) != _shape(searched):
        raise UserError(f"--from-experiment: the spaces do not match: {source} searches "
                        f"{_describe(theirs)}; this stage searches {_describe(searched)}")
    dists = {dim.name: dim.distribution() for dim in searched.values()}
    trials = []
    for t in other.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values = {key: t.params.get(dim.name) for key, dim in searched.items()}
        if is_imported(t) or not all(dim.contains(values[key]) for key, dim in searched.items()):
            continue
        trials.append(optuna.trial.create_trial(
            params={searched[key].name: v for key, v in values.items()}, distributions=dists, value=t.value,
            user_attrs={IMPORTED_ATTR: f"{source}/{t.number}", SETTINGS_ATTR: values}))
    study.add_trials(trials)
    return len(trials)


def warm_start(session, study: optuna.Study, stage: str, searched: dict[str, Dimension], n_trials: int,
               enqueue=None, from_experiment: str | None = None) -> None:
    """--from-experiment's trials added, then --enqueue's settings enqueued; each once, saying what it added."""
    if from_experiment:
        if n := import_trials(study, session.storage, from_experiment, stage, searched):
            session.terminal.say(f"{stage}: {n} completed trial(s) of {study_name(from_experiment, stage)} added "
                                 "for the sampler")
    if enqueue is not None:
        if n := enqueue_rows(study, searched, read_enqueue(enqueue, searched, n_trials)):
            session.terminal.say(f"{stage}: {n} setting(s) of {enqueue} enqueued to be tried first")


def _shape(searched: dict[str, Dimension]) -> dict:
    return {key: (dim.kind, dim.log) for key, dim in searched.items()}


def _describe(searched: dict[str, Dimension]) -> str:
    return ", ".join(dim.describe() for dim in searched.values())
