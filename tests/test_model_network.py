"""The NumPy core's arithmetic: gradients against centred differences, softmax, loss, cost and accuracy by hand, one
update step by hand, label smoothing, and the fused step against gradients + SGD. (Training: test_model_training.py;
model/'s imports: test_model_purity.py.)"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from model import gradcheck, network


def test_gradients_match_centered_differences_in_float64():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 30))
    y = rng.integers(0, 10, 10)
    params = network.init_params(30, 8, 10, rng, dtype=np.float64)
    table = gradcheck.compare(params, X, y, lam=0.1)
    assert set(table) == {"W1", "b1", "W2", "b2"}
    for name, row in table.items():
        assert row["max_rel"] < 1e-6, (name, row)
        assert row["max_abs"] < 1e-8, (name, row)


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 6)), rng.integers(0, 10, 5)
    params = network.init_params(6, 4, 10, rng, dtype=np.float64)
    real = network.gradients

    def off_by_lambda(p, X, y, lam, out=None, mask=None, smoothing=0.0):
        g, P = real(p, X, y, 0.0, out, mask, smoothing)  # forgets the regulariser
        return g, P

    monkeypatch.setattr(gradcheck, "gradients", off_by_lambda)
    table = gradcheck.compare(params, X, y, lam=0.5)
    assert table["W1"]["max_rel"] > 1e-3 and table["b1"]["max_rel"] < 1e-6


def test_gradcheck_on_first_n_samples_and_d_dims():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((50, 100)), rng.integers(0, 10, 50)
    table = gradcheck.check(X, y, hidden=5, lam=0.01, n=3, dims=7)
    assert all(row["max_rel"] < 1e-6 for row in table.values())


def test_softmax_does_not_overflow():
    S = np.array([[1000.0, 1000.0, -1000.0], [-1e4, 0.0, 1e4]], dtype=np.float32)
    P = network.softmax(S)
    assert np.isfinite(P).all()
    assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert_allclose(P[0], [0.5, 0.5, 0.0], atol=1e-6)


def test_loss_cost_accuracy_by_hand():
    params = network.Params(
        W1=np.eye(2), b1=np.zeros(2), W2=np.array([[1.0, 0.0], [0.0, 1.0]] + [[0.0, 0.0]] * 8), b2=np.zeros(10)
    )
    X = np.array([[2.0, 0.0], [0.0, 3.0]])
    y = np.array([0, 0])
    # scores: row 0 = [2, 0, 0...], row 1 = [0, 3, 0...]
    l0 = -2 + np.log(np.exp(2) + 9)
    l1 = np.log(np.exp(3) + 9)
    assert network.loss(params, X, y) == pytest.approx((l0 + l1) / 2)
    assert network.cost(params, X, y, 0.5) == pytest.approx((l0 + l1) / 2 + 0.5 * 4)
    assert network.accuracy(params, X, y) == 0.5
    ev = network.evaluate(params, X, y, 0.5, chunk=1)
    assert ev == pytest.approx({"loss": (l0 + l1) / 2, "cost": (l0 + l1) / 2 + 2, "accuracy": 0.5})


def test_a_single_step_by_hand():
    """One sample through a 2 -> 3 -> 3 network with non-zero weights and λ > 0, by the report's formulas.

    Hidden unit 1 is inactive (W1 x + b1 < 0), so its ReLU mask matters; every weight is non-zero, so
    a wrong weight-decay term (λW instead of 2λW, or none) changes the step.
    """
    from model.step import Step

    x, label, lam, eta = np.array([1.0, 2.0]), 2, 0.1, 0.5
    W1 = np.array([[0.5, -0.25], [-1.0, 0.25], [0.75, 0.5]])
    b1 = np.array([0.1, 0.0, -0.2])
    W2 = np.array([[1.0, -0.5, 0.25], [-0.75, 0.5, 1.0], [0.5, 0.25, -1.0]])
    b2 = np.array([0.0, 0.1, -0.1])
    h = np.maximum(W1 @ x + b1, 0)  # [0.1, 0, 1.55]: unit 1 is off
    assert h[1] == 0 and h[0] > 0 and h[2] > 0
    p = np.exp(W2 @ h + b2) / np.exp(W2 @ h + b2).sum()
    g = p - np.eye(3)[label]
    gh = (W2.T @ g) * (h > 0)
    expected = {"W1": W1 - eta * (np.outer(gh, x) + 2 * lam * W1), "b1": b1 - eta * gh,
                "W2": W2 - eta * (np.outer(g, h) + 2 * lam * W2), "b2": b2 - eta * g}  # fmt: skip

    params = network.Params(W1.copy(), b1.copy(), W2.copy(), b2.copy())
    grads, _ = network.gradients(params, x[None], np.array([label]), lam)
    for (name, p0), (_, dp) in zip(params.items(), grads.items(), strict=True):
        assert_allclose(p0 - eta * dp, expected[name], rtol=1e-12, err_msg=name)
    Step(params, 1)(params, x[None], np.array([label]), eta, lam)
    for name, p1 in params.items():
        assert_allclose(p1, expected[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_label_smoothed_gradients_match_centered_differences():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((10, 30))
    y = rng.integers(0, 10, 10)
    params = network.init_params(30, 8, 10, rng, dtype=np.float64)
    table = gradcheck.compare(params, X, y, lam=0.1, smoothing=0.2)
    for name, row in table.items():
        assert row["max_rel"] < 1e-6, (name, row)
        assert row["max_abs"] < 1e-8, (name, row)
    # The smoothed targets change the gradient (else the check above would not be checking them).
    plain, _ = network.gradients(params, X, y, 0.1)
    smooth, _ = network.gradients(params, X, y, 0.1, smoothing=0.2)
    assert np.abs(plain.b2 - smooth.b2).max() > 1e-3


def test_label_smoothed_loss_by_hand():
    """Targets 1 − α + α/k on the true class and α/k elsewhere: −Σ t_j log p_j."""
    params = network.init_params(5, 4, 10, np.random.default_rng(3), dtype=np.float64)
    X = np.random.default_rng(4).standard_normal((3, 5))
    y = np.array([1, 7, 7])
    P = network.forward(params, X)[1]
    T = np.full((3, 10), 0.3 / 10)
    T[np.arange(3), y] += 0.7
    assert_allclose(network.loss(params, X, y, smoothing=0.3), -(T * np.log(P)).sum(axis=1).mean(), rtol=1e-12)
    assert_allclose(network.loss(params, X, y), -np.log(P[np.arange(3), y]).mean(), rtol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_step_equals_gradients_and_sgd(smoothing):
    """model.step.Step (the training loop's step) makes the same update as gradients() + plain SGD."""
    from model.step import Step

    rng = np.random.default_rng(4)
    X = rng.standard_normal((32, 40)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    params = network.init_params(40, 12, 10, rng)
    params.b1[:] = rng.standard_normal(12) * 0.1
    params.b2[:] = rng.standard_normal(10) * 0.1
    eta, lam = 0.05, 0.02
    g, _ = network.gradients(params, X, y, lam, smoothing=smoothing)
    expected = {name: p - eta * dp for (name, p), (_, dp) in zip(params.items(), g.items(), strict=True)}
    fused = network.Params(np.asfortranarray(params.W1), *(a.copy() for _, a in list(params.items())[1:]))
    assert Step(fused, 32, smoothing=smoothing)(fused, X, y, eta, lam)
    for name, p in fused.items():
        assert_allclose(p, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.array_equal(p, getattr(params, name)), name  # every parameter moved


def test_fused_step_reports_non_finite_probabilities():
    from model.step import Step

    params = network.init_params(4, 3, 10, np.random.default_rng(0))
    X = np.full((2, 4), np.inf, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        assert not Step(params, 2)(params, X, np.array([1, 2]), 0.1, 0.0)
