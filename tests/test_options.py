"""The training options the search can use: augmentation, dropout, test-time flip averaging."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from model import gradcheck, network
from model.augment import Augmenter, D, flip
from model.step import Step
from model.train import TrainSettings, train


def images(n=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def shifted_by_hand(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """One (3072,) image moved dx pixels right and dy down, pixel by pixel, zeros where nothing lands."""
    src, out = img.reshape(3, 32, 32), np.zeros((3, 32, 32), img.dtype)
    for i in range(32):
        for j in range(32):
            if 0 <= i - dy < 32 and 0 <= j - dx < 32:
                out[:, i, j] = src[:, i - dy, j - dx]
    return out.reshape(D)


def test_flipping_twice_is_the_identity_and_flip_mirrors_each_plane_row():
    X = images()
    assert_array_equal(flip(flip(X)), X)
    planes = X.reshape(6, 3, 32, 32)
    assert_array_equal(flip(X).reshape(6, 3, 32, 32)[:, :, :, 0], planes[:, :, :, 31])
    assert_array_equal(Augmenter(6, 0).apply(X, 6, np.zeros(6, int), np.zeros(6, int)), flip(X))
    assert_array_equal(Augmenter(6, 3).apply(X, 0, np.zeros(6, int), np.zeros(6, int)), X)


SHIFTS = [(1, 0), (0, 2), (-3, 1), (2, -2), (-1, -4), (4, 4)]


def test_a_shifted_image_equals_the_hand_shifted_one():
    X = images(len(SHIFTS))
    dx, dy = np.array(SHIFTS).T
    out = Augmenter(len(X), 4).apply(X, 0, dx, dy)
    for b, (x, y) in enumerate(SHIFTS):
        assert_array_equal(out[b], shifted_by_hand(X[b], x, y), err_msg=f"dx={x}, dy={y}")
    # the last two images mirrored first, then shifted
    out = Augmenter(len(X), 4).apply(X, 2, dx, dy)
    for b in (4, 5):
        assert_array_equal(out[b], shifted_by_hand(flip(X[b : b + 1])[0], dx[b], dy[b]))
    assert_array_equal(out[:4], Augmenter(len(X), 4).apply(X, 0, dx, dy)[:4])


def test_random_augmentation_draws_each_flip_and_shift():
    """Every output row is one of the 2·5² transforms of its input; flips are about half, all shifts occur."""
    n, k = 400, 2
    X = images(n, seed=1)
    out = Augmenter(n, k)(X, np.random.default_rng(0))
    found = np.zeros((n, 2, 2 * k + 1, 2 * k + 1), bool)
    for f in (0, 1):
        for dx in range(-k, k + 1):
            for dy in range(-k, k + 1):
                cand = Augmenter(n, k).apply(X, f * n, np.full(n, dx), np.full(n, dy))
                found[:, f, dx + k, dy + k] = (cand == out).all(axis=1)
    assert (found.reshape(n, -1).sum(axis=1) == 1).all()
    assert 160 <= found[:, 1].sum() <= 240
    assert found.any(axis=(0, 1)).all()
    with pytest.raises(ValueError, match="shift"):
        Augmenter(4, 32)


def test_dropout_keeps_the_expected_activation():
    rng = np.random.default_rng(0)
    H = np.abs(rng.standard_normal((1, 50))).astype(np.float32)
    masks = network.dropout_mask(0.3, rng, np.empty((20000, 50), np.float32))
    assert set(np.unique(masks)) == {0.0, np.float32(1 / 0.7)}
    assert (masks == 0).mean() == pytest.approx(0.3, abs=0.01)
    assert_allclose((H * masks).mean(axis=0), H[0], rtol=0.05)


def test_gradcheck_passes_with_dropout_and_a_fixed_mask():
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((8, 30)), rng.integers(0, 10, 8)
    params = network.init_params(30, 12, 10, rng, dtype=np.float64)
    mask = network.dropout_mask(0.5, rng, np.empty((8, 12)))
    assert 0 < np.count_nonzero(mask) < mask.size
    for name, row in gradcheck.compare(params, X, y, lam=0.1, mask=mask).items():
        assert row["max_rel"] < 1e-6 and row["max_abs"] < 1e-8, (name, row)
    g_masked, _ = network.gradients(params, X, y, 0.1, mask=mask)
    g_plain, _ = network.gradients(params, X, y, 0.1)
    assert not np.allclose(g_masked.W1, g_plain.W1)


def test_fused_step_with_dropout_equals_gradients_with_its_mask():
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((16, 40)).astype(np.float32), rng.integers(0, 10, 16)
    params = network.init_params(40, 20, 10, rng)
    eta, lam = 0.1, 0.01
    fused = network.Params(*(a.copy() for _, a in params.items()))
    step = Step(fused, 16, dropout=0.4, rng=np.random.default_rng(1))
    assert step(fused, X, y, eta, lam)
    assert 0 < np.count_nonzero(step.keep) < step.keep.size
    g, _ = network.gradients(params, X, y, lam, mask=step.keep)
    for (name, p), (_, dp), (_, q) in zip(params.items(), g.items(), fused.items(), strict=True):
        assert_allclose(q, p - eta * dp, rtol=1e-5, atol=1e-6, err_msg=name)


def test_flip_averaged_evaluation():
    rng = np.random.default_rng(7)
    X, y = images(30, seed=2), rng.integers(0, 10, 30)
    params = network.init_params(D, 8, 10, rng)
    P = network.flip_averaged_probabilities(params, X)
    by_hand = (network.forward(params, X)[1] + network.forward(params, flip(X))[1]) / 2
    assert_allclose(P, by_hand, rtol=1e-5, atol=1e-7)
    ev = network.evaluate(params, X, y, 0.01, chunk=7, tta_flip=True)
    assert ev["loss"] == pytest.approx(-np.log(by_hand[np.arange(30), y]).mean(), rel=1e-5)
    assert ev["accuracy"] == np.mean(by_hand.argmax(axis=1) == y)
    assert ev["cost"] == pytest.approx(ev["loss"] + 0.01 * network.penalty(params))
    symmetric = (X + flip(X)) / 2  # a mirror-symmetric image: averaging changes nothing
    assert_allclose(network.flip_averaged_probabilities(params, symmetric), network.forward(params, symmetric)[1],
                    rtol=1e-5, atol=1e-7)  # fmt: skip


SMALL_IMAGES = dict(hidden=8, batch_size=20, n_s=10, cycles=1, checkpoints_per_cycle=2, lam=1e-3)


def test_options_are_seeded_and_change_training():
    X, y = images(100, seed=3), np.random.default_rng(3).integers(0, 10, 100)
    base = train(X, y, X[:20], y[:20], TrainSettings(**SMALL_IMAGES)).params
    for option in ({"augment": True, "shift": 3}, {"augment": True}, {"dropout": 0.2}):
        a, b = (train(X, y, X[:20], y[:20], TrainSettings(**SMALL_IMAGES, **option)).params for _ in range(2))
        assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(a.items(), b.items(), strict=True)), option
        assert not np.array_equal(a.W1, base.W1), option


def test_option_settings_are_checked():
    with pytest.raises(ValueError, match="dropout"):
        TrainSettings(dropout=1.0)
    with pytest.raises(ValueError, match="shift"):
        TrainSettings(augment=True, shift=-1)
    X = np.zeros((10, 20), np.float32)
    with pytest.raises(ValueError, match="augment needs CIFAR rows"):
        train(X, np.zeros(10, int), X, np.zeros(10, int), TrainSettings(augment=True, batch_size=5))
