"""Whitening of the input (model.whiten): fitted on the training rows only, identity covariance up to eps,
folded into the first layer at registration, recorded with every run, searchable in [space]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import optuna
import pytest
from numpy.testing import assert_allclose

from model import whiten
from model.augment import flip, mirror_permutation
from model.cifar10 import load_batch
from model.network import flip_averaged_probabilities, forward, init_params
from pipeline.data import sources
from tests.cifar_fixtures import make_cifar, write_batch
from tests.conftest import hpsearch


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 5).astype(np.float64)


def covariance(X: np.ndarray) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    return Xc.T @ Xc / len(X)


def test_zca_of_the_training_rows_has_identity_covariance_up_to_eps():
    X = correlated(2000, 16)
    eig = whiten.fit(X)
    white = whiten.whitening(eig, whiten.WhitenSpec("zca", eps=1e-9)).apply(X)
    assert_allclose(covariance(white), np.eye(16), atol=1e-6)
    assert_allclose(white.mean(axis=0), 0, atol=1e-8)
    # eps shrinks the small directions: the whitened covariance has eigenvalues s²·λ/(λ + eps), not 1.
    loose = whiten.whitening(eig, whiten.WhitenSpec("zca", eps=10.0))
    values = np.linalg.eigvalsh(covariance(loose.apply(X)))
    assert values.max() / values.min() > 2
    assert_allclose(values.mean(), 1.0, rtol=1e-9)  # rescaled to unit average variance
    assert_allclose(loose.P, loose.P.T)  # ZCA: symmetric, the whitened rows stay in pixel coordinates


def test_with_mirrors_the_whitening_is_that_of_the_rows_and_their_mirror_images():
    X = correlated(3000, 12, seed=1)
    mirror = np.arange(12)[::-1].copy()  # any involution stands for the image mirror here
    w = whiten.whitening(whiten.fit(X, mirror), whiten.WhitenSpec("zca", eps=1e-9))
    both = np.vstack([X, X[:, mirror]])
    assert_allclose(covariance(w.apply(both)), np.eye(12), atol=1e-6)
    assert_allclose(w.P[np.ix_(mirror, mirror)], w.P, atol=1e-10)  # P commutes with mirroring


def test_pca_keeps_the_asked_fraction_of_the_variance():
    X = correlated(1000, 20, seed=2)
    eig = whiten.fit(X)
    share = np.cumsum(eig.values) / eig.values.sum()
    w = whiten.whitening(eig, whiten.WhitenSpec("pca", eps=1e-9, keep=0.9))
    assert w.components == int(np.argmax(share >= 0.9)) + 1 < 20
    assert np.linalg.matrix_rank(w.P) == w.components
    assert whiten.whitening(eig, whiten.WhitenSpec("pca", eps=1e-9, keep=1.0)).components == 20


@pytest.mark.parametrize("spec, match", [(dict(kind="pcaa"), "whiten must be one of none, pca, zca"),
                                         (dict(kind="zca", eps=-0.1), "whiten_eps must be a number ≥ 0"),
                                         (dict(kind="pca", keep=1.5), "whiten_keep must be a fraction")])
def test_invalid_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        whiten.WhitenSpec(**spec)


def test_the_folded_network_predicts_what_the_network_predicts_on_whitened_rows():
    """On CIFAR rows: the same probabilities, and the same mirror-averaged ones (P commutes with the mirror)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 3072)).astype(np.float32)
    X[:, :1024] += X[:, 1024:2048]  # some correlation between the planes
    w = whiten.whitening(whiten.fit(X[:200], mirror_permutation()), whiten.WhitenSpec("zca", eps=0.1))
    params = init_params(3072, 20, 10, rng)
    params.b1[:] = rng.standard_normal(20) * 0.1
    folded = w.fold(params)
    assert folded.W1.shape == (20, 3072) and folded.W1.dtype == np.float32
    test = X[200:]
    assert_allclose(forward(folded, test)[1], forward(params, w.apply(test))[1], atol=2e-5)
    assert_allclose(flip_averaged_probabilities(folded, test), flip_averaged_probabilities(params, w.apply(test)),
                    atol=2e-5)
    assert_allclose(w.apply(flip(test)), flip(w.apply(test)), atol=1e-4)


def test_whitening_is_fitted_on_the_training_rows_only(tmp_path, monkeypatch):
    """Changing validation rows (the last val_size of data_batch_5) leaves what the whitening is fitted on, and
    so the matrix, unchanged; changing a training row changes both. (The eigh itself is stood in for: it is
    a function of what it is given, and 3072² eigh calls would dominate the test's time.)"""
    fitted_on = []

    def spy(X, mirror=None):
        fitted_on.append(X.copy())
        d = X.shape[1]
        return whiten.Eigen(X.mean(axis=0, dtype=np.float64), np.ones(d), np.eye(d))

    monkeypatch.setattr(whiten, "fit", spy)
    spec = whiten.WhitenSpec("zca", eps=1.0)

    def variant(name: str, rows: slice | None):
        folder = make_cifar(tmp_path / name, n_per_batch=100)
        if rows is not None:
            X, y = load_batch(folder / "data_batch_5")
            X = X.copy()
            X[rows] = 255 - X[rows]
            write_batch(folder / "data_batch_5", X, y)
        return sources.dataset(folder, "holdout", 50, 0, spec)

    base = variant("base", None)
    assert base.whitening is not None and base.whitening.spec == spec
    assert_allclose(fitted_on[-1], sources._normalised(tmp_path / "base" / "cifar-10-batches-py",
                                                                   "holdout", 50).X_train)
    assert len(fitted_on[-1]) == 450  # 5 × 100 training images, the last 50 validate
    val_changed = variant("val", slice(50, 100))
    assert_allclose(fitted_on[-1], fitted_on[0])
    assert val_changed.whitening.digest == base.whitening.digest
    assert not np.allclose(val_changed.X_val, base.X_val)
    train_changed = variant("train", slice(0, 10))
    assert not np.allclose(fitted_on[-1], fitted_on[0])
    assert train_changed.whitening.digest != base.whitening.digest


@pytest.mark.slow
def test_a_whitened_final_is_recorded_and_registered_folded(project):
    """The run records its whitening and the matrix digest; the registered model takes raw pixels, is
    3072 → m → 10, and scores the test batch exactly as the run's test accuracy and loss say."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.registry import load_champion

    hpsearch("train-final", "--lambda", "0.01", "--set", 'data.whiten="zca"', "--set", "data.whiten_eps=0.5",
             "--set", "train.tta_flip=true")
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("cifar10-mlp", "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["data.whiten"] == "zca" and run.data.params["data.whiten_eps"] == "0.5"
    assert len(run.data.params["data.whiten_digest"]) == 64
    model = load_champion(uri)
    X, y = load_batch(Path(os.environ["HPSEARCH_DATA"]) / "test_batch")
    P = np.asarray(model.predict(X.astype(np.float32)), np.float64)
    assert P.shape == (len(y), 10)
    assert (P.argmax(axis=1) == y).mean() == run.data.metrics["test_accuracy"]
    assert_allclose(-np.log(P[np.arange(len(y)), y]).mean(), run.data.metrics["test_loss"], rtol=1e-4)
    weights = client.download_artifacts(version.run_id, "model", str(project))
    with np.load(f"{weights}/artifacts/weights.npz") as w:
        assert w["W1"].shape[1] == 3072 and w["W2"].shape[0] == 10


def test_invalid_whitening_settings_are_one_error_line_and_record_nothing(project):
    from tests.test_errors import fails

    for setting, match in (('data.whiten="pcaa"', "whiten must be one of none, pca, zca"),
                           ("data.whiten_eps=-1.0", "whiten_eps must be a number ≥ 0"),
                           ("train.label_smoothing=1.5", "label_smoothing must be in [0, 1)")):
        fails("train", "--config", "studies/wide-final.toml", "--set", setting, code=2, match=match)
        fails("search", "coarse", "--set", setting, code=2, match=match)
    assert not (project / "mlruns").exists() or not any((project / "mlruns").iterdir())
    assert not (project / "studies" / "optuna.journal").exists()


@pytest.mark.slow
def test_every_new_setting_round_trips_through_space(project):
    """data.whiten, whiten_eps, whiten_keep and train.label_smoothing searched by a real (tiny) coarse stage:
    each trial trains with, and records, the values it drew."""
    from mlflow.tracking import MlflowClient

    from pipeline.settings import config, space

    table = {"data.whiten": {"choices": ["none", "zca", "pca"]},
             "data.whiten_eps": {"low": 0.1, "high": 3.0, "log": True},
             "data.whiten_keep": {"low": 0.9, "high": 0.999},
             "train.label_smoothing": {"low": 0.0, "high": 0.2},
             "model.hidden": {"choices": [8, 4096]}}
    parsed = space.parse(table, config._types())
    assert space.from_json(space.to_json(parsed)) == parsed
    cfg = config.load("coarse").replace({"data.whiten": "pca", "data.whiten_eps": 0.5, "train.label_smoothing": 0.1})
    assert cfg.data.whitening == whiten.WhitenSpec("pca", 0.5, cfg.data.whiten_keep)
    assert cfg.train_settings().label_smoothing == 0.1

    del table["model.hidden"]
    args = [a for key, spec in table.items() for a in ("--set", f"space.{key}={toml(spec)}")]
    hpsearch("search", "coarse", "--n-trials", "3", "--no-prune", *args)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = [r for r in client.search_runs([client.get_experiment_by_name("cifar10-lambda").experiment_id])
            if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(runs) == 3
    for r in runs:
        p = r.data.params
        assert p["data.whiten"] in ("none", "zca", "pca") and 0.1 <= float(p["data.whiten_eps"]) <= 3.0
        assert 0 <= float(p["train.label_smoothing"]) <= 0.2
        assert ("data.whiten_digest" in p) == (p["data.whiten"] != "none")
    assert {r.data.params["data.whiten"] for r in runs} != {"none"}
    # each run trained with the values its trial drew (not the file's defaults)
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse", storage=open_storage("studies/optuna.journal"))
    by_id = {r.info.run_id: r.data.params for r in runs}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
        drawn = t.user_attrs["settings"]
        assert {k.partition(".")[2]: v for k, v in drawn.items()} == t.params
        assert {k: by_id[t.user_attrs["mlflow_run_id"]][k] for k in drawn} == {k: str(v) for k, v in drawn.items()}


def toml(spec: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in spec.items()) + " }"


def test_a_new_whitening_lets_go_of_the_last_one_even_when_a_pruned_trial_still_holds_it(tmp_path, monkeypatch):
    """A pruned trial's exception keeps its frames, and so the training's arrays, alive in a reference cycle until
    the collector runs: a wide search's worker grew to 5.9 GB. Switching whitening (or split) collects it."""
    import gc
    import weakref

    d = 3072  # an identity fit: what is tested is who holds the copy, not the maths (above)
    monkeypatch.setattr(whiten, "fit", lambda X, mirror=None: whiten.Eigen(X.mean(axis=0, dtype=np.float64),
                                                                           np.ones(d), np.eye(d)))
    folder = make_cifar(tmp_path, n_per_batch=100)
    gc.disable()  # the collector must not run by chance: only the switch may free the old copy
    try:
        old = weakref.ref(sources.dataset(folder, "holdout", 50, 0, whiten.WhitenSpec("zca", eps=1.0)).X_train)

        def pruned(X):
            try:
                raise RuntimeError("pruned")
            except RuntimeError as e:
                caught = e  # the frame holds its exception, whose traceback holds the frame: a cycle
                return caught

        held = pruned(old())
        del held
        assert old() is not None  # only the cycle holds it now
        sources.dataset(folder, "holdout", 50, 0, whiten.WhitenSpec("zca", eps=2.0))
        assert old() is None
    finally:
        gc.enable()
