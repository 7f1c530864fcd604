"""Warm starts (pipeline/warm.py): --enqueue FILE.toml tries settings first; --from-experiment NAME gives the
sampler another experiment's completed trials of the same stage."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from pipeline.errors import ConfigError, UserError
from pipeline.names import IMPORTED_ATTR, SPACE_ATTR
from pipeline.search import warm
from pipeline.session import open_storage
from pipeline.settings import space
from pipeline.workers.waiting import tally
from tests.conftest import hpsearch

LAM = {"train.lambda": space.Dimension("train.lambda", "float", 1e-5, 1e-1, True)}
PEAK = -2.0  # the made-up source's best λ is 1e-2


def source_study(storage, experiment="src", stage="coarse", searched=LAM, n=20) -> optuna.Study:
    """An earlier experiment's stage: n completed trials spread over the range, best near λ = 1e-2."""
    study = optuna.create_study(study_name=f"{experiment}-{stage}", storage=storage, direction="maximize")
    study.set_user_attr(SPACE_ATTR, space.to_json(searched))
    dists = {d.name: d.distribution() for d in searched.values()}
    for lg in np.linspace(-5, -1, n):
        study.add_trial(optuna.trial.create_trial(params={"lambda": 10**lg}, distributions=dists,
                                                  value=0.5 - 0.1 * (lg - PEAK) ** 2))
    return study


def test_imported_trials_are_added_once_with_their_origin_and_do_not_count(tmp_path):
    storage = open_storage(str(tmp_path / "s.journal"))
    source_study(storage)
    study = optuna.create_study(study_name="dst-coarse", storage=storage, direction="maximize")
    assert warm.import_trials(study, storage, "src", "coarse", LAM) == 20
    assert warm.import_trials(study, storage, "src", "coarse", LAM) == 0, "a rerun adds nothing twice"
    trials = study.trials
    assert [t.user_attrs[IMPORTED_ATTR] for t in trials] == [f"src-coarse/{i}" for i in range(20)]
    assert all(t.state.name == "COMPLETE" and t.value is not None for t in trials)
    assert tally(study).finished == 0, "they inform the sampler; the stage still trains its n_trials"


def test_spaces_that_do_not_match_are_refused_in_one_line(tmp_path):
    storage = open_storage(str(tmp_path / "s.journal"))
    two = LAM | {"model.hidden": space.Dimension("model.hidden", "categorical", choices=(4, 8))}
    source_study(storage, searched=LAM)
    study = optuna.create_study(study_name="dst-coarse", storage=storage)
    with pytest.raises(UserError) as e:
        warm.import_trials(study, storage, "src", "coarse", two)
    assert str(e.value) == ("--from-experiment: the spaces do not match: src-coarse searches lambda 1e-05 .. 0.1 "
                            "(log-uniform); this stage searches lambda 1e-05 .. 0.1 (log-uniform), hidden in [4, 8]")
    with pytest.raises(UserError, match="no study 'nowhere-coarse'"):
        warm.import_trials(study, storage, "nowhere", "coarse", LAM)
    assert study.trials == []


def test_tpes_first_draw_learns_from_the_imported_trials(tmp_path):
    """Cold, TPE's first draws (its startup trials) are random over 1e-5..1e-1; with 20 imported trials it
    draws near their best λ, 1e-2, at once."""
    from pipeline.api import load_settings
    from pipeline.search.sampling import make_sampler

    storage = open_storage(str(tmp_path / "s.journal"))
    source_study(storage)
    cold, warmed = [], []
    for seed in range(6):
        cfg = load_settings("coarse", overrides={"search.sampler": "tpe", "train.seed": seed})
        for name, out in ((f"cold{seed}-coarse", cold), (f"warm{seed}-coarse", warmed)):
            study = optuna.create_study(study_name=name, storage=storage, sampler=make_sampler(cfg),
                                        direction="maximize")
            if name.startswith("warm"):
                warm.import_trials(study, storage, "src", "coarse", LAM)
            out.append(math.log10(study.ask({"lambda": LAM["train.lambda"].distribution()}).params["lambda"]))
    assert cold != warmed
    assert max(abs(lg - PEAK) for lg in warmed) < 0.6, warmed
    assert max(abs(lg - PEAK) for lg in cold) > 1, cold


def test_enqueue_files_are_checked_like_the_space(tmp_path):
    two = LAM | {"model.hidden": space.Dimension("model.hidden", "categorical", choices=(4, 8))}
    f = tmp_path / "warm.toml"
    f.write_text('[[trial]]\n"train.lambda" = 0.003\n"model.hidden" = 8\n\n[[trial]]\n"train.lambda" = 1e-4\n')
    assert warm.read_enqueue(f, two, 8) == [{"train.lambda": 0.003, "model.hidden": 8}, {"train.lambda": 1e-4}]
    for text, message in (
            ('[[trial]]\n"train.lambda" = 0.5\n', "[[trial]] 1: train.lambda = 0.5 is outside the stage's space "
                                                  "(lambda 1e-05 .. 0.1 (log-uniform))"),
            ('[[trial]]\n"train.n_s" = 300\n', "[[trial]] 1: train.n_s is not searched by this stage; its space: "
                                               "train.lambda, model.hidden"),
            ('[[trial]]\n"model.hidden" = 5\n', "[[trial]] 1: model.hidden = 5 is outside the stage's space"),
            ('lambda = 0.1\n', "must list settings as [[trial]] tables"),
            ('[[trial]]\n"train.lambda" = 0.001\n' * 9, "lists 9 settings; the stage runs 8 trials")):
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            warm.read_enqueue(f, two, 8)
        assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_enqueued_settings_are_the_first_trials_and_imported_ones_reach_the_sampler(project):
    (project / "warm.toml").write_text('[[trial]]\n"train.lambda" = 0.0031\n\n[[trial]]\n"train.lambda" = 2e-5\n')
    hpsearch("search", "coarse", "--n-trials", "3", "--no-prune", "--enqueue", "warm.toml")
    storage = open_storage(str(project / "studies/optuna.journal"))
    study = optuna.load_study(study_name="cifar10-lambda-coarse", storage=storage)
    assert [t.params["lambda"] for t in sorted(study.trials, key=lambda t: t.number)][:2] == [0.0031, 2e-5]
    assert len(study.trials) == 3
    hpsearch("search", "coarse", "--n-trials", "3", "--enqueue", "warm.toml")  # a rerun enqueues nothing again
    assert len(optuna.load_study(study_name="cifar10-lambda-coarse", storage=storage).trials) == 3

    out = hpsearch("--experiment", "next", "search", "coarse", "--n-trials", "1", "--sampler", "tpe",
                   "--from-experiment", "cifar10-lambda").stdout
    assert "coarse: 1/1 trials finished, complete" in out
    study = optuna.load_study(study_name="next-coarse", storage=storage)
    imported = [t for t in study.trials if IMPORTED_ATTR in t.user_attrs]
    assert sorted(t.user_attrs[IMPORTED_ATTR] for t in imported) == [f"cifar10-lambda-coarse/{i}" for i in range(3)]
    assert "mismatch" not in out
    bad = hpsearch("--experiment", "other", "search", "coarse", "--n-trials", "1", "--from-experiment",
                   "cifar10-lambda", "--set", "space.model.hidden={ choices = [4, 8] }", code=1)
    assert bad.stderr.startswith("error: --from-experiment: the spaces do not match") and bad.stderr.count("\n") == 1
