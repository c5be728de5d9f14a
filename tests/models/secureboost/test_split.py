import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost._histogram import build_histogram, node_sum
from hefl.models.secureboost._split import (
    FeatureBlocks,
    SplitInfo,
    SplitParams,
    concat_histograms,
    evaluate_splits,
    find_best_split,
    is_splittable,
    leaf_weights,
)

SLOTS = 7  # 6 value bins + missing
MISSING = SLOTS - 1


def _score(sums, p, k):
    g, h = sums[:k], sums[k:]
    if k == 1:
        return 0.0 if h[0] < p.min_child_weight else g[0] ** 2 / (h[0] + p.reg_lambda)
    ok = (h >= p.min_child_weight) & (h > 0)
    return float(np.sum(np.where(ok, g**2 / (h + p.reg_lambda), 0.0)))


def _brute_force(bins, gh, p):
    """Best loss change over every (feature, bin, missing direction) by row sums."""
    k = gh.shape[1] // 2
    total = gh.sum(axis=0)
    best = -np.inf
    for f, b, dl in itertools.product(range(bins.shape[1]), range(-1, MISSING), (False, True)):
        code = bins[:, f]
        miss = code == MISSING
        left = np.where(miss, dl, code <= b)
        ls, rs = gh[left].sum(axis=0), gh[~left].sum(axis=0)
        if k == 1 and (ls[1] < p.min_child_weight or rs[1] < p.min_child_weight):
            continue
        gain = _score(ls, p, k) + _score(rs, p, k) - _score(total, p, k)
        best = max(best, gain)
    return best


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 3]), mcw=st.sampled_from([0.0, 1.0, 5.0]),
       nan=st.booleans())
def test_best_split_matches_brute_force(seed, k, mcw, nan):
    rng = np.random.default_rng(seed)
    n, d = 40, 3
    bins = rng.integers(0, MISSING, size=(n, d))
    if nan:
        bins[rng.random((n, d)) < 0.2] = MISSING
    gh = np.concatenate([rng.normal(size=(n, k)), rng.random((n, k)) + 0.05], axis=1)
    p = SplitParams(reg_lambda=1.0, gamma=0.0, min_child_weight=mcw)
    hist = build_histogram(bins.astype(np.uint8), gh, SLOTS)
    split = find_best_split(hist, node_sum(gh), p)
    best = _brute_force(bins, gh, p)
    if split is None:
        assert best <= 1e-9
        return
    assert split.gain == pytest.approx(best, rel=1e-5, abs=1e-5)
    # the split's reported child sums are the sums of the rows it sends left / right
    code = bins[:, split.global_feature]
    left = np.where(code == MISSING, split.default_left, code <= split.bin)
    np.testing.assert_allclose(split.left_sum, gh[left].sum(axis=0), atol=1e-9)
    np.testing.assert_allclose(split.right_sum, gh[~left].sum(axis=0), atol=1e-9)


def _hist_from(bins, gh, slots=SLOTS):
    return build_histogram(np.asarray(bins, dtype=np.uint8), gh, slots)


def test_ties_go_to_lowest_feature_then_forward_scan():
    rng = np.random.default_rng(0)
    col = rng.integers(0, MISSING, 50)
    bins = np.stack([col, col, col], axis=1)  # identical features
    gh = np.stack([rng.normal(size=50), np.ones(50)], axis=1)
    s = find_best_split(_hist_from(bins, gh), node_sum(gh), SplitParams())
    assert s is not None
    assert s.global_feature == 0 and s.default_left is False
    # masking feature 0 moves the choice to the next identical one
    s2 = find_best_split(_hist_from(bins, gh), node_sum(gh), SplitParams(),
                         feature_mask=np.array([False, True, True]))
    assert s2 is not None and s2.global_feature == 1 and s2.gain == s.gain


def test_missing_values_learn_their_direction():
    # low bins and missing rows share a negative gradient: missing should go left
    bins = np.array([[0]] * 10 + [[5]] * 10 + [[MISSING]] * 10)
    g = np.r_[np.full(10, -1.0), np.full(10, 1.0), np.full(10, -1.0)]
    gh = np.stack([g, np.ones(30)], axis=1)
    s = find_best_split(_hist_from(bins, gh), node_sum(gh), SplitParams())
    assert s is not None and s.default_left is True and 0 <= s.bin < 5
    np.testing.assert_allclose(s.left_sum, [-20.0, 20.0])
    # ...and right when they look like the high bins
    gh2 = gh.copy()
    gh2[20:, 0] = 1.0
    s2 = find_best_split(_hist_from(bins, gh2), node_sum(gh2), SplitParams())
    assert s2 is not None and s2.default_left is False


def test_min_child_weight_and_gamma():
    bins = np.array([[0]] * 2 + [[1]] * 20)
    g = np.r_[np.full(2, -5.0), np.full(20, 0.5)]
    gh = np.stack([g, np.ones(22)], axis=1)
    hist, tot = _hist_from(bins, gh), node_sum(gh)
    s = find_best_split(hist, tot, SplitParams(min_child_weight=1.0))
    assert s is not None and s.bin == 0
    assert find_best_split(hist, tot, SplitParams(min_child_weight=3.0)) is None
    # gamma does not change the choice, only whether the node is split
    assert is_splittable(s, SplitParams(gamma=s.gain * 0.99))
    assert not is_splittable(s, SplitParams(gamma=s.gain * 1.01))
    assert not is_splittable(None, SplitParams())


def test_leaf_weights_follow_xgboost():
    p = SplitParams(reg_lambda=2.0, min_child_weight=1.5)
    w = leaf_weights(np.array([[4.0, 2.0], [4.0, 1.0], [1.0, 0.0]]), p)
    np.testing.assert_allclose(w[:, 0], [-1.0, 0.0, 0.0])
    wk = leaf_weights(np.array([1.0, -2.0, 2.0, 1.0]), p)  # K=2: second output below mcw
    np.testing.assert_allclose(wk, [-0.25, 0.0])


def test_blocks_concat_and_owner():
    rng = np.random.default_rng(3)
    n = 200
    a_bins = rng.integers(0, 4, size=(n, 2))  # party A: max_bin 4 -> 5 slots
    b_bins = rng.integers(0, 6, size=(n, 3))  # party B: max_bin 6 -> 7 slots
    a_bins[rng.random((n, 2)) < 0.1] = 4
    b_bins[rng.random((n, 3)) < 0.1] = 6
    g = np.where(b_bins[:, 2] <= 2, -1.0, 1.0) + rng.normal(scale=0.1, size=n)
    gh = np.stack([g, np.ones(n)], axis=1)
    ha = build_histogram(a_bins.astype(np.uint8), gh, 5)
    hb = build_histogram(b_bins.astype(np.uint8), gh, 7)
    hist, blocks = concat_histograms([ha, hb])
    assert hist.shape == (5, 7, 2) and blocks.sizes == (2, 3)
    # padding keeps A's missing slot last and its value bins in place
    np.testing.assert_array_equal(hist[:2, :4], ha[:, :4])
    np.testing.assert_array_equal(hist[:2, 6], ha[:, 4])
    assert np.all(hist[:2, 4:6] == 0)
    s = find_best_split(hist, node_sum(gh), SplitParams(), blocks=blocks)
    assert s is not None and (s.block, s.feature, s.global_feature, s.bin) == (1, 2, 4, 2)
    assert blocks.locate(4) == (1, 2) and blocks.global_index(1, 2) == 4
    sid = s.split_id(7)
    assert SplitInfo.decode_split_id(sid, 7) == (s.feature, s.bin)
    # the same block layout over a stack of nodes
    stack, _ = concat_histograms([ha[None].repeat(2, 0), hb[None].repeat(2, 0)])
    both = evaluate_splits(stack, np.tile(node_sum(gh), (2, 1)), SplitParams(), blocks=blocks)
    assert [x.global_feature for x in both] == [4, 4]


def test_input_validation():
    with pytest.raises(ConfigError, match="reg_lambda"):
        SplitParams(reg_lambda=-1.0)
    with pytest.raises(DataError, match="shape"):
        evaluate_splits(np.zeros((2, 3, 4)), np.zeros((2, 2)), SplitParams())
    with pytest.raises(DataError, match="blocks"):
        evaluate_splits(np.zeros((1, 3, 4, 2)), np.zeros((1, 2)), SplitParams(),
                        blocks=FeatureBlocks((1, 1)))
    with pytest.raises(DataError, match="line up"):
        concat_histograms([np.zeros((2, 3, 2)), np.zeros((2, 3, 4))])
