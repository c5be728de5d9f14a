"""The plaintext core: the expansion, optimisers, batches, and the reference trainer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error, roc_auc_score

from hefl.errors import ConfigError
from hefl.models.hetero_lr import LRConfig, expand_loss, plain_fit
from hefl.models.hetero_lr._core import Optimizer, batch_slices, converged, sigmoid

from .conftest import load_dataset


def _logloss(u, y):
    return np.logaddexp(0.0, u) - y * u


def test_anchored_expansion_is_taylor_in_the_passive_score():
    rng = np.random.default_rng(0)
    u_a, y = rng.normal(size=50) * 3, rng.integers(0, 2, 50).astype(float)
    l0, s, h = expand_loss("logistic", u_a, y)
    eps = 1e-4
    np.testing.assert_allclose(l0, _logloss(u_a, y))
    np.testing.assert_allclose(s, (_logloss(u_a + eps, y) - _logloss(u_a - eps, y)) / (2 * eps), atol=1e-7)
    np.testing.assert_allclose(
        h, (_logloss(u_a + eps, y) - 2 * _logloss(u_a, y) + _logloss(u_a - eps, y)) / eps**2, atol=1e-5)
    # second-order accurate in U: error O(U^3)
    for U in (0.1, 0.01):
        err = np.abs(_logloss(u_a + U, y) - (l0 + s * U + 0.5 * h * U * U)).max()
        assert err < 0.05 * U**3 + 1e-12


def test_zero_expansion_is_fates_residual():
    rng = np.random.default_rng(1)
    u_a, U, y = rng.normal(size=20), rng.normal(size=20), rng.integers(0, 2, 20).astype(float)
    _, s, h = expand_loss("logistic", u_a, y, taylor="zero")
    np.testing.assert_allclose(s + h * U, 0.25 * (u_a + U) + 0.5 - y)


def test_linear_expansion_is_exact():
    rng = np.random.default_rng(2)
    u_a, U, y = rng.normal(size=20), rng.normal(size=20), rng.normal(size=20)
    l0, s, h = expand_loss("linear", u_a, y)
    np.testing.assert_allclose(l0 + s * U + 0.5 * h * U * U, 0.5 * (u_a + U - y) ** 2)


def test_sigmoid_is_stable():
    v = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(v, [0.0, 0.5, 1.0])


def test_batches_cover_every_row_once_and_depend_on_seed_and_epoch():
    b = batch_slices(3, 0, 1000, 300)
    assert [len(x) for x in b] == [300, 300, 300, 100]
    assert np.array_equal(np.sort(np.concatenate(b)), np.arange(1000))
    assert all(np.array_equal(x, z) for x, z in zip(b, batch_slices(3, 0, 1000, 300)))
    assert not np.array_equal(b[0], batch_slices(3, 1, 1000, 300)[0])
    assert not np.array_equal(b[0], batch_slices(4, 0, 1000, 300)[0])


@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adagrad", "adam"])
def test_optimisers_minimise_a_quadratic(kind):
    target = np.array([1.0, -2.0, 0.5])
    opt = Optimizer(kind, 0.05 if kind != "adagrad" else 0.5, None, 0.0, np.ones(3, bool))
    w = np.zeros(3)
    for _ in range(2000):
        w = opt.step(w, w - target)
    np.testing.assert_allclose(w, target, atol=1e-2)


def test_l1_proximal_step_zeroes_small_weights_but_not_the_intercept():
    opt = Optimizer("sgd", 0.1, "l1", 1.0, np.array([True, True, False]))
    w = opt.step(np.array([0.05, 2.0, 0.05]), np.zeros(3))
    np.testing.assert_allclose(w, [0.0, 1.9, 0.05])


def test_converged():
    assert not converged([1.0], 1e-3)
    assert converged([1.0, 1.0005], 1e-3)
    assert not converged([1.0, 1.0005], None)


@pytest.mark.parametrize("bad", [
    {"protocol": "three_party"}, {"he": "rsa"}, {"optimizer": "lbfgs"}, {"penalty": "elasticnet"},
    {"learning_rate": 0.0}, {"max_iter": 0}, {"batch_size": 1.5}, {"alpha": -1.0}, {"tol": -1.0},
    {"he": "ckks", "passives": ("a", "b")}, {"protocol": "arbiter"}, {"passives": ()},
    {"active": "host"}, {"momentum": 1.0},
])
def test_config_rejects_bad_values_by_name(bad):
    with pytest.raises(ConfigError):
        LRConfig(**bad).validate()


def test_plain_reference_matches_sklearn_on_breast():
    Xtr, Xte, ytr, yte, ng = load_dataset("breast")
    alpha = 1e-3
    cfg = LRConfig(alpha=alpha, max_iter=60, batch_size=128, tol=None)
    res = plain_fit([Xtr[:, :ng], Xtr[:, ng:]], ytr, cfg, seed=0)
    w = np.concatenate(res["coef"])
    ref = LogisticRegression(C=1 / (alpha * len(ytr)), max_iter=5000).fit(Xtr, ytr)
    auc, auc_ref = roc_auc_score(yte, Xte @ w + res["intercept"]), roc_auc_score(yte, ref.decision_function(Xte))
    assert auc >= 0.99 * auc_ref
    assert res["n_iter"] == 60 and len(res["loss_curve"]) == 60


def test_plain_reference_matches_ridge_on_motor():
    Xtr, Xte, ytr, yte, ng = load_dataset("motor")
    alpha = 1e-3
    cfg = LRConfig(task="linear", alpha=alpha, max_iter=300, batch_size=1024, tol=1e-9)
    res = plain_fit([Xtr[:, :ng], Xtr[:, ng:]], ytr, cfg, seed=0)
    w = np.concatenate(res["coef"])
    ref = Ridge(alpha=alpha * len(ytr)).fit(Xtr, ytr)
    rmse = mean_squared_error(yte, Xte @ w + res["intercept"]) ** 0.5
    assert rmse <= 1.02 * mean_squared_error(yte, ref.predict(Xte)) ** 0.5
    # the loss is exact for linear regression: it decreases to the ridge objective
    obj = 0.5 * np.mean((Xtr @ ref.coef_ + ref.intercept_ - ytr) ** 2) + 0.5 * alpha * ref.coef_ @ ref.coef_
    assert abs(res["loss_curve"][-1] - obj) < 1e-3
