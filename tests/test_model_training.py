"""The NumPy core's training: the cyclic schedule, how training behaves (it learns, λ shrinks the weights, seeds,
float32, divergence, callbacks, settings, checkpoints, the train-metrics subset), and bit identity with the weights
recorded before the training options existed. (Gradients and steps: test_model_network.py.)"""

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from model import network
from model.schedule import cyclic_eta
from model.train import DivergedError, TrainSettings, train


def blobs(n=600, d=20, k=10, seed=0, spread=3.0):
    """A learnable problem: each class is a Gaussian blob around its own centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * spread
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


@pytest.mark.parametrize(
    "t, eta", [(0, 1e-5), (250, (1e-5 + 1e-1) / 2), (500, 1e-1), (1000, 1e-5), (1500, 1e-1), (750, (1e-5 + 1e-1) / 2)]
)
def test_cyclic_schedule(t, eta):
    assert cyclic_eta(t, 1e-5, 1e-1, 500) == pytest.approx(eta)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_s"):
        cyclic_eta(0, 1e-5, 1e-1, 0)


SMALL = dict(hidden=16, batch_size=50, eta_min=1e-4, eta_max=5e-2, n_s=60, cycles=1, checkpoints_per_cycle=4)


def test_training_learns_and_reports_checkpoints():
    X, y = blobs()
    seen = []
    result = train(X[:500], y[:500], X[500:], y[500:], TrainSettings(lam=1e-3, **SMALL), lambda s, m: seen.append(s))
    assert seen == [30, 60, 90, 120] == result.history["step"]
    assert result.final("val_accuracy") > 0.8
    assert result.history["eta"][1] == pytest.approx(5e-2)
    for key in ("train_loss", "train_cost", "val_loss", "val_cost", "train_accuracy"):
        assert len(result.history[key]) == 4
    assert all(c > l for c, l in zip(result.history["train_cost"], result.history["train_loss"], strict=True))


def test_larger_lambda_gives_smaller_weights():
    X, y = blobs()
    norms = []
    for lam in (1e-4, 1e-1):
        p = train(X, y, X, y, TrainSettings(lam=lam, **SMALL)).params
        norms.append(network.penalty(p))
    assert norms[1] < 0.5 * norms[0]


def test_same_seed_is_bit_identical_and_other_seed_differs():
    X, y = blobs()
    a, b, c = (train(X, y, X, y, TrainSettings(seed=s, **SMALL)).params for s in (7, 7, 8))
    for (_, pa), (_, pb) in zip(a.items(), b.items(), strict=True):
        assert np.array_equal(pa, pb)
    assert not np.array_equal(a.W1, c.W1)


def test_training_in_float32_stays_float32():
    X, y = blobs()
    p = train(X, y, X, y, TrainSettings(**SMALL)).params
    assert all(a.dtype == np.float32 for _, a in p.items())


def test_divergence_raises_with_the_step():
    """Each update multiplies the weights by about 1 − 2ηλ = −2·10⁴, so the scores of the update
    numbered 4 (counting from 0) overflow float32: the error names that step, not a checkpoint's."""
    X, y = blobs()
    with pytest.raises(DivergedError, match=r"diverged at step 4: non-finite class probabilities") as e:
        train(X * 1e4, y, X, y, TrainSettings(lam=1e3, **(SMALL | {"eta_min": 10.0, "eta_max": 100.0})))
    assert e.value.step == 4


def test_callback_exception_stops_training():
    X, y = blobs()
    calls = []

    def stop(step, metrics):
        calls.append(step)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(X, y, X, y, TrainSettings(**SMALL), stop)
    assert calls == [30]


def test_settings_validation():
    with pytest.raises(ValueError, match="λ must be ≥ 0"):
        TrainSettings(lam=-1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        TrainSettings(batch_size=0)
    assert TrainSettings(n_s=200, cycles=3, checkpoints_per_cycle=10).checkpoint_steps()[-1] == 1200
    assert len(TrainSettings(n_s=200, cycles=3, checkpoints_per_cycle=10).checkpoint_steps()) == 30


def test_train_metrics_on_a_seeded_subset():
    """train_eval_size picks a fixed subset from the seed, leaves training bit-identical; 0 = all rows."""
    from model.train import train_eval_rows

    X, y = blobs()
    rows = train_eval_rows(600, TrainSettings(train_eval_size=100, seed=3))
    assert len(rows) == len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, train_eval_rows(600, TrainSettings(train_eval_size=100, seed=3)))
    assert not np.array_equal(rows, train_eval_rows(600, TrainSettings(train_eval_size=100, seed=4)))
    assert train_eval_rows(600, TrainSettings(train_eval_size=0)) is None
    assert train_eval_rows(600, TrainSettings(train_eval_size=600)) is None

    full = train(X, y, X[:50], y[:50], TrainSettings(**SMALL, seed=3))
    sub = train(X, y, X[:50], y[:50], TrainSettings(**SMALL, seed=3, train_eval_size=100))
    for (_, a), (_, b) in zip(full.params.items(), sub.params.items(), strict=True):
        assert np.array_equal(a, b)
    assert full.history["val_loss"] == sub.history["val_loss"]  # validation always uses the full set
    assert full.history["train_loss"] != sub.history["train_loss"]
    expected = network.evaluate(full.params, X[rows], y[rows], TrainSettings().lam)
    assert sub.history["train_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="train_eval_size"):
        TrainSettings(train_eval_size=-1)


def test_fewer_checkpoints_leave_the_weights_and_the_cycle_end_values_unchanged():
    """The searches evaluate 5 times per cycle rather than 10 (the pruner judges at cycle ends only, a trial's value
    is its last validation accuracy): the weights, and every metric at a step both evaluate, are bit-identical."""
    X, y = blobs()
    many = train(X, y, X[:50], y[:50], TrainSettings(**SMALL | {"cycles": 2, "checkpoints_per_cycle": 10}, seed=3))
    few = train(X, y, X[:50], y[:50], TrainSettings(**SMALL | {"cycles": 2, "checkpoints_per_cycle": 5}, seed=3))
    for (_, a), (_, b) in zip(many.params.items(), few.params.items(), strict=True):
        assert np.array_equal(a, b)
    assert len(few.history["step"]) == 10 and set(few.history["step"]) < set(many.history["step"])
    assert {120, 240} <= set(few.history["step"])  # the ends of both cycles (2 n_s = 120 steps)
    at = {s: i for i, s in enumerate(many.history["step"])}
    for key in ("val_accuracy", "val_loss", "train_loss"):
        assert [many.history[key][at[s]] for s in few.history["step"]] == few.history[key]


# sha256 of the weight bytes of the run below, recorded with the fused step before the training
# options (augment, shift, dropout, tta_flip) existed. The rounding of a GEMM depends on the BLAS
# kernel, so bit identity is checked against the kernel the hash was recorded with.
GOLDEN_SHA256 = {
    "SkylakeX": "b0ae7a57a3ca63db4cf8eb1c53ffa410b922e07ce6b5998bf713839ad4cece1f",
    "Haswell": "4150f1863298481d942fd3f572f52363ff5b775b8089a9537836899dcd4ffd0e",
}


def test_options_off_train_bit_identically_to_before_they_existed():
    """Guards the exercises and the report's pipeline: with every option at its default, training
    draws the same random numbers and does the same arithmetic as before the options were added,
    so the exercise configs still give the same weights. Any extra draw from the training stream
    changes the batches and moves the weights far beyond the tolerance; on a known BLAS kernel any
    change of arithmetic at all fails the hash."""
    import hashlib

    X, y = blobs()
    params = train(X[:500], y[:500], X[500:], y[500:], TrainSettings(**SMALL, lam=1e-3, seed=5)).params
    golden = np.load(Path(__file__).with_name("golden_train.npz"))
    for name, p in params.items():
        assert_allclose(p, golden[name], rtol=1e-4, atol=1e-6, err_msg=name)
    if blas_kernel() in GOLDEN_SHA256:
        digest = hashlib.sha256(b"".join(p.tobytes() for _, p in params.items())).hexdigest()
        assert digest == GOLDEN_SHA256[blas_kernel()]


def blas_kernel() -> str | None:
    """OpenBLAS's kernel name (threadpoolctl comes with scikit-learn, an MLflow dependency)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return next((i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"), None)
