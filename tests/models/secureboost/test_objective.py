import json

import numpy as np
import pytest

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost._objective import (
    BinaryLogistic,
    SoftmaxMultiClass,
    SquaredError,
    get_objective,
)

xgb = pytest.importorskip("xgboost")


def _numeric_grad(obj, y, m, eps=1e-5):
    """Per-sample numerical derivative of the loss w.r.t. each margin (diagonal)."""
    n, k = m.shape
    g = np.zeros_like(m)
    h = np.zeros_like(m)
    for j in range(k):
        d = np.zeros_like(m)
        d[:, j] = eps
        lp = np.array([obj.loss(y[i:i + 1], (m + d)[i:i + 1]) for i in range(n)])
        l0 = np.array([obj.loss(y[i:i + 1], m[i:i + 1]) for i in range(n)])
        lm = np.array([obj.loss(y[i:i + 1], (m - d)[i:i + 1]) for i in range(n)])
        g[:, j] = (lp - lm) / (2 * eps)
        h[:, j] = (lp - 2 * l0 + lm) / eps**2
    return g, h


def test_logistic_gradients_match_loss_derivatives():
    rng = np.random.default_rng(0)
    obj = BinaryLogistic()
    y = (rng.random(20) < 0.5).astype(float)
    m = rng.normal(size=(20, 1)) * 3
    g, h = obj.gradients(y, m)
    ng, nh = _numeric_grad(obj, y, m)
    np.testing.assert_allclose(g, ng, atol=1e-6)
    np.testing.assert_allclose(h, nh, atol=1e-4)


def test_softmax_uses_xgboost_hessian_convention():
    rng = np.random.default_rng(1)
    obj = SoftmaxMultiClass(4)
    y = rng.integers(0, 4, 15).astype(float)
    m = rng.normal(size=(15, 4))
    g, h = obj.gradients(y, m)
    ng, nh = _numeric_grad(obj, y, m)
    np.testing.assert_allclose(g, ng, atol=1e-6)
    # XGBoost doubles the diagonal Hessian p(1-p) of the softmax loss
    np.testing.assert_allclose(h, 2 * nh, atol=1e-4)


def test_squared_error_gradients_and_weights():
    obj = SquaredError()
    y = np.array([1.0, 2.0, -1.0])
    m = np.array([[0.5], [2.0], [1.0]])
    w = np.array([1.0, 2.0, 0.5])
    g, h = obj.gradients(y, m, w)
    np.testing.assert_allclose(g[:, 0], (m[:, 0] - y) * w)
    np.testing.assert_allclose(h[:, 0], w)
    gh = obj.gh(y, m, w)
    assert gh.shape == (3, 2) and gh.dtype == np.float64


def _xgb_intercept(params, X, y, w=None):
    b = xgb.train(dict(params, eta=0.0, nthread=1), xgb.DMatrix(X, label=y, weight=w), 1)
    return b.predict(xgb.DMatrix(X[:1]), output_margin=True).ravel()


@pytest.mark.parametrize("weighted", [False, True])
def test_estimated_intercept_matches_xgboost(weighted):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    w = rng.random(300) + 0.1 if weighted else None
    yb = (rng.random(300) < 0.3).astype(float)
    yr = rng.normal(size=300) * 2 + 1
    yk = rng.integers(0, 3, 300).astype(float)
    cases = [
        (BinaryLogistic(), {"objective": "binary:logistic"}, yb),
        (SquaredError(), {"objective": "reg:squarederror"}, yr),
        (SoftmaxMultiClass(3), {"objective": "multi:softprob", "num_class": 3}, yk),
    ]
    for obj, params, y in cases:
        np.testing.assert_allclose(obj.init_margin(y, w), _xgb_intercept(params, X, y, w),
                                   atol=2e-6, err_msg=obj.name)


def test_explicit_base_score_matches_xgboost():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2))
    y = (rng.random(50) < 0.5).astype(float)
    m = _xgb_intercept({"objective": "binary:logistic", "base_score": 0.2}, X, y)
    np.testing.assert_allclose(BinaryLogistic().margin_from_base_score(0.2), m, atol=1e-6)
    m = _xgb_intercept({"objective": "multi:softprob", "num_class": 3, "base_score": 0.2},
                       X, np.arange(50) % 3)
    np.testing.assert_allclose(SoftmaxMultiClass(3).margin_from_base_score(0.2), m, atol=1e-6)


def test_transforms_and_metrics():
    m = np.array([[0.0], [100.0], [-100.0]])
    np.testing.assert_allclose(BinaryLogistic().transform(m), [0.5, 1.0, 0.0], atol=1e-12)
    assert np.isfinite(BinaryLogistic().loss(np.array([0.0, 0.0, 1.0]), m))
    p = SoftmaxMultiClass(3).transform(np.array([[1000.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert SquaredError().loss(np.array([1.0, 3.0]), np.array([[2.0], [2.0]])) == 1.0


def test_factory_and_label_checks():
    assert get_objective("binary:logistic").n_outputs == 1
    assert get_objective("multi:softmax", 5).n_outputs == 5
    assert json.dumps(get_objective("reg:squarederror").to_dict())
    with pytest.raises(ConfigError, match="unknown objective"):
        get_objective("rank:pairwise")
    with pytest.raises(ConfigError, match="n_classes"):
        get_objective("multi:softprob")
    with pytest.raises(DataError, match=r"\{0, 1\}"):
        BinaryLogistic().check_labels([0, 2])
    with pytest.raises(DataError, match="integer labels"):
        SoftmaxMultiClass(3).check_labels([0, 3])
    with pytest.raises(ConfigError, match="base_score"):
        BinaryLogistic().margin_from_base_score(1.0)
