"""Weight averaging at cycle ends (model.average, train.average_cycles): the mean itself, the training that
returns it without changing its trajectory, and the registered model that serves it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from model.average import average, is_cycle_end
from model.network import Params
from model.train import TrainSettings, train
from tests.conftest import hpsearch


def test_the_average_is_the_hand_computed_mean():
    a = Params(np.array([[1.0, 2.0]], np.float32), np.array([0.0], np.float32), np.array([[4.0]], np.float32),
               np.array([1.0], np.float32))
    b = Params(np.array([[3.0, -2.0]], np.float32), np.array([1.0], np.float32), np.array([[0.0]], np.float32),
               np.array([2.0], np.float32))
    c = Params(np.array([[2.0, 3.0]], np.float32), np.array([2.0], np.float32), np.array([[2.0]], np.float32),
               np.array([0.0], np.float32))
    m = average([a, b, c])
    assert_array_equal(m.W1, [[2.0, 1.0]])  # (1 + 3 + 2) / 3, (2 − 2 + 3) / 3
    assert_array_equal(m.b1, [1.0])
    assert_array_equal(m.W2, [[2.0]])
    assert_array_equal(m.b2, [1.0])
    assert m.W1.dtype == np.float32
    with pytest.raises(ValueError, match="nothing to average"):
        average([])


def test_cycle_ends_are_every_two_n_s_steps():
    assert [s for s in range(0, 13) if is_cycle_end(s, 3)] == [6, 12]


def rows(n: int, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.intp) + 2 * (X[:, 1] > 0)


def test_a_training_with_averaging_returns_the_mean_of_its_last_cycle_ends_and_the_same_last_weights():
    X, y = rows(200)
    base = dict(lam=1e-3, hidden=8, batch_size=20, n_s=10, cycles=3, checkpoints_per_cycle=2, seed=1)
    plain = train(X, y, X[:50], y[:50], TrainSettings(**base))
    avg = train(X, y, X[:50], y[:50], TrainSettings(**base, average_cycles=2))
    assert avg.last is not None and len(avg.cycle_ends) == 2  # the ends of cycles 2 and 3
    for name, a in plain.params.items():
        assert_array_equal(getattr(avg.last, name), a)  # averaging never changes the trajectory
        assert_array_equal(getattr(avg.cycle_ends[-1], name), a)  # the last cycle end is the last weights
        hand = (getattr(avg.cycle_ends[0], name).astype(np.float64) + a) / 2
        assert_allclose(getattr(avg.params, name), hand, rtol=1e-6)
        assert not np.array_equal(getattr(avg.cycle_ends[0], name), a)  # two different snapshots
    assert avg.history == plain.history  # the curves are the last weights' as before
    assert avg.final() == avg.averaged["val_accuracy"]  # the returned network's own score
    with pytest.raises(ValueError, match="average_cycles must be in 0..cycles"):
        TrainSettings(**base, average_cycles=4)


@pytest.mark.slow
def test_the_registered_averaged_model_reproduces_the_runs_test_accuracy(project):
    """train.average_cycles on a whitened final: the registered (folded) model is the average, and classifies
    the raw test batch exactly as the run's test accuracy says; the last weights are logged beside it."""
    from mlflow.tracking import MlflowClient

    from model.cifar10 import load_batch
    from pipeline.tracking.registry import load_champion

    hpsearch("train-final", "--lambda", "0.01", "--set", 'data.whiten="pca"', "--set", "train.cycles=2",
             "--set", "train.average_cycles=2", "--set", "train.tta_flip=true")
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(client.get_model_version_by_alias("cifar10-mlp", "champion").run_id)
    assert run.data.params["train.average_cycles"] == "2"
    assert "test_accuracy_last_weights" in run.data.metrics
    X, y = load_batch(Path(os.environ["HPSEARCH_DATA"]) / "test_batch")
    P = np.asarray(load_champion(uri).predict(X.astype(np.float32)), np.float64)
    assert (P.argmax(axis=1) == y).mean() == run.data.metrics["test_accuracy"]
    assert_allclose(-np.log(P[np.arange(len(y)), y]).mean(), run.data.metrics["test_loss"], rtol=1e-4)


def test_a_searched_trial_with_averaging_scores_the_averaged_network(project, monkeypatch):
    """The trial's value is what the returned (averaged) network scores on validation; the last weights' score
    is kept beside it."""
    import optuna

    import pipeline.search.objective
    from pipeline.workers.waiting import FINISHED

    got = []
    real = pipeline.search.objective.train

    def spy(*args, **kwargs):  # marks the averaged network's score, which tiny data often ties with the last's
        got.append(real(*args, **kwargs))
        got[-1].averaged["val_accuracy"] = 0.123
        return got[-1]

    monkeypatch.setattr(pipeline.search.objective, "train", spy)
    hpsearch("search", "coarse", "--n-trials", "1", "--no-prune", "--set", "train.average_cycles=2")
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse", storage=open_storage("studies/optuna.journal"))
    (trial,) = study.get_trials(states=FINISHED)
    assert trial.value == 0.123 != got[0].history["val_accuracy"][-1]
    assert trial.user_attrs["last_weights_val_accuracy"] == got[0].history["val_accuracy"][-1]
