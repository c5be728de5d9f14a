import json
import time

import numpy as np
import pytest

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost._core import PlainBooster

from .helpers import make_data

xgb = pytest.importorskip("xgboost")


def test_early_stopping_picks_the_same_round_as_xgboost():
    X, y = make_data("binary", n=1600, nan=0.05, seed=11)
    Xtr, ytr, Xva, yva = X[:800], y[:800], X[800:], y[800:]
    ours = PlainBooster(objective="binary:logistic", n_estimators=200, max_depth=5,
                        learning_rate=0.5, base_score=0.5, early_stopping_rounds=5)
    ours.fit(Xtr, ytr, eval_set=[(Xva, yva)])
    n_done = ours.tree_round_[-1] + 1
    assert n_done < 200 and n_done == ours.best_iteration_ + 6
    assert len(ours.evals_result_[0]) == n_done
    assert ours.best_score_ == min(ours.evals_result_[0])
    # predictions use the best round by default
    np.testing.assert_array_equal(ours.predict_margin(Xva),
                                  ours.predict_margin(Xva, n_rounds=ours.best_iteration_ + 1))

    codes_tr = ours.binner_.transform(Xtr).astype(np.float32)
    codes_va = ours.binner_.transform(Xva).astype(np.float32)
    codes_tr[codes_tr == 32] = np.nan
    codes_va[codes_va == 32] = np.nan
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 256,
              "max_depth": 5, "eta": 0.5, "base_score": 0.5, "eval_metric": "logloss",
              "nthread": 1}
    bst = xgb.train(params, xgb.DMatrix(codes_tr, label=ytr), 200,
                    evals=[(xgb.DMatrix(codes_va, label=yva), "va")],
                    early_stopping_rounds=5, verbose_eval=False)
    assert bst.best_iteration == ours.best_iteration_


def test_sampling_is_seeded_and_still_learns():
    X, y = make_data("binary", n=1200, seed=12)
    kw = {"objective": "binary:logistic", "n_estimators": 15, "max_depth": 4,
          "subsample": 0.6, "colsample_bytree": 0.5}
    a = PlainBooster(random_state=1, **kw).fit(X, y)
    b = PlainBooster(random_state=1, **kw).fit(X, y)
    c = PlainBooster(random_state=2, **kw).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert not np.array_equal(a.predict(X), c.predict(X))
    roots = np.array([t.n_samples[0] for t in a.trees_])
    assert np.all(np.abs(roots - 720) < 100)
    used = {int(f) for t in a.trees_ for f in t.feature[t.left >= 0]}
    for t in a.trees_:  # at most half of the 8 columns in each tree
        assert len(set(t.feature[t.left >= 0].tolist())) <= 4
    assert len(used) > 4
    acc = np.mean((a.predict(X) > 0.5) == y)
    assert acc > 0.8


@pytest.mark.parametrize("task,objective", [("binary", "binary:logistic"),
                                            ("multi", "multi:softprob"),
                                            ("reg", "reg:squarederror")])
def test_json_round_trip_and_blocks(task, objective):
    X, y = make_data(task, n=600, nan=0.1, seed=13)
    m = PlainBooster(objective=objective, n_estimators=5, max_depth=3)
    m.fit(X, y, feature_blocks=[3, 5])
    text = json.dumps(m.to_dict(), allow_nan=False)
    m2 = PlainBooster.from_dict(json.loads(text))
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))
    assert {int(b) for t in m.trees_ for b in t.block[t.left >= 0]} <= {0, 1}
    # the block layout is bookkeeping only
    m3 = PlainBooster(objective=objective, n_estimators=5, max_depth=3).fit(X, y)
    np.testing.assert_array_equal(m3.predict(X), m.predict(X))
    out = m.predict(X)
    assert out.shape == ((600, 3) if task == "multi" else (600,))


def test_binned_routing_matches_raw_prediction():
    X, y = make_data("reg", n=800, nan=0.1, seed=14)
    m = PlainBooster(objective="reg:squarederror", n_estimators=8, max_depth=4).fit(X, y)
    rng = np.random.default_rng(0)
    Xt = rng.normal(size=(500, 8)) * 2
    bins = m.binner_.transform(Xt)
    margin = np.tile(m.base_margin_, (500, 1))
    for t in m.trees_:
        margin += t.predict_binned(bins, m.binner_.missing_bin)
    np.testing.assert_allclose(m.predict_margin(Xt), margin, atol=1e-12)


def test_benchmark_shape_is_fast():
    # the federated benchmark: 20k rows x 20 features, 10 trees of depth 5
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=20_000) > 0).astype(float)
    m = PlainBooster(objective="binary:logistic", n_estimators=10, max_depth=5, max_bin=32)
    t0 = time.perf_counter()
    m.fit(X, y)
    per_tree = (time.perf_counter() - t0) / 10
    assert per_tree < 0.5, f"{per_tree:.3f} s per tree"


def test_errors():
    X, y = make_data("binary", n=50)
    with pytest.raises(ConfigError, match="not fitted"):
        PlainBooster().predict(X)
    with pytest.raises(ConfigError, match="subsample"):
        PlainBooster(subsample=0.0).fit(X, y)
    with pytest.raises(ConfigError, match="multi_strategy"):
        PlainBooster(multi_strategy="both").fit(X, y)
    with pytest.raises(DataError, match="labels"):
        PlainBooster().fit(X, y[:10])
    with pytest.raises(DataError, match="feature_blocks"):
        PlainBooster().fit(X, y, feature_blocks=[3, 3])
    m = PlainBooster(n_estimators=2).fit(X, y)
    with pytest.raises(DataError, match="shape"):
        m.predict(X[:, :3])
