"""The plaintext core against XGBoost trained on the very same bins.

XGBoost gets our bin codes as float features (missing code -> NaN) with
``max_bin=256``, so each code is its own XGBoost bin and both libraries choose among
the same candidate splits; margins must agree to float32 precision.
"""

import json

import numpy as np
import pytest

from hefl.models.secureboost._core import PlainBooster

from .helpers import OBJECTIVES, make_data, xgb_on_codes

pytest.importorskip("xgboost")

ATOL = 1e-5


def _compare(task, *, nan=0.0, rounds=10, seed=0, n=1000, weights=False, base_score=0.5,
             policy="depthwise", max_depth=4, max_leaves=0, strategy="multi_output_tree",
             **reg):
    X, y = make_data(task, n=n, nan=nan, seed=seed)
    w = np.random.default_rng(seed).random(n) + 0.5 if weights else None
    hp = {"learning_rate": 0.3, "reg_lambda": 1.0, "gamma": 0.0, "min_child_weight": 1.0}
    hp.update(reg)
    ours = PlainBooster(objective=OBJECTIVES[task], n_estimators=rounds, max_depth=max_depth,
                        max_leaves=max_leaves, grow_policy=policy, max_bin=32,
                        base_score=base_score, multi_strategy=strategy, **hp)
    ours.fit(X, y, sample_weight=w)
    params = {
        "objective": OBJECTIVES[task], "max_depth": max_depth, "max_leaves": max_leaves,
        "grow_policy": policy, "eta": hp["learning_rate"], "reg_lambda": hp["reg_lambda"],
        "gamma": hp["gamma"], "min_child_weight": hp["min_child_weight"], "subsample": 1.0,
    }
    if base_score is not None:
        params["base_score"] = base_score
    if task == "multi":
        params.update(num_class=3, multi_strategy=strategy)
    codes = ours.binner_.transform(X)
    booster, margin = xgb_on_codes(codes, ours.binner_.missing_bin, y, params, rounds, w)
    np.testing.assert_allclose(ours.predict_margin(X), margin, atol=ATOL, rtol=0)
    return ours, booster


def _xgb_leaf_counts(booster):
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    return [sum(1 for c in t["left_children"] if c == -1) for t in trees]


@pytest.mark.parametrize("task", ["binary", "reg", "multi"])
@pytest.mark.parametrize("nan", [0.0, 0.15])
def test_depthwise_matches(task, nan):
    ours, booster = _compare(task, nan=nan)
    assert [t.n_leaves for t in ours.trees_] == _xgb_leaf_counts(booster)


def test_softmax_one_tree_per_class_matches():
    ours, booster = _compare("multi", nan=0.15, strategy="one_output_per_tree", rounds=6)
    assert len(ours.trees_) == 18 and ours.tree_output_[:3] == [0, 1, 2]
    assert [t.n_leaves for t in ours.trees_] == _xgb_leaf_counts(booster)


@pytest.mark.parametrize("task", ["binary", "reg", "multi"])
def test_lossguide_matches(task):
    ours, booster = _compare(task, nan=0.1, policy="lossguide", max_depth=0, max_leaves=12)
    assert [t.n_leaves for t in ours.trees_] == _xgb_leaf_counts(booster)
    assert max(t.max_depth for t in ours.trees_) > 4  # genuinely leaf-wise


def test_lossguide_with_depth_limit_and_depthwise_with_leaf_limit():
    _compare("binary", nan=0.1, policy="lossguide", max_depth=3, max_leaves=7, seed=1)
    _compare("reg", nan=0.1, policy="depthwise", max_depth=4, max_leaves=6, seed=2)


@pytest.mark.parametrize("task", ["binary", "reg", "multi"])
def test_regularisation_matches(task):
    # min_child_weight and gamma large enough to prune many splits
    mcw = {"binary": 15.0, "reg": 30.0, "multi": 20.0}[task]
    gamma = {"binary": 1.0, "reg": 5.0, "multi": 1.0}[task]
    _compare(task, nan=0.1, min_child_weight=mcw, gamma=gamma, reg_lambda=3.0,
             learning_rate=0.1, seed=3)


@pytest.mark.parametrize("task", ["binary", "reg"])
def test_no_regularisation_matches(task):
    # lambda = 0 and min_child_weight = 0 exercise the 0/0 and G^2/0 candidates
    _compare(task, reg_lambda=0.0, min_child_weight=0.0, seed=4, n=600)


@pytest.mark.parametrize("task", ["binary", "reg", "multi"])
def test_sample_weights_and_estimated_intercept_match(task):
    _compare(task, nan=0.1, weights=True, base_score=None, seed=5)
