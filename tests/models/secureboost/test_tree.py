import json

import numpy as np
import pytest

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost._binning import QuantileBinner
from hefl.models.secureboost._histogram import build_histograms
from hefl.models.secureboost._objective import BinaryLogistic, SoftmaxMultiClass
from hefl.models.secureboost._split import FeatureBlocks, SplitParams, concat_histograms
from hefl.models.secureboost._tree import (
    GrowParams,
    HistogramProvider,
    LocalHistogramProvider,
    Tree,
    TreeGrower,
)

from .helpers import make_data


def _setup(task="binary", n=2000, nan=0.1, seed=0, max_bin=32):
    X, y = make_data(task, n=n, nan=nan, seed=seed)
    binner = QuantileBinner(max_bin).fit(X)
    bins = binner.transform(X)
    obj = BinaryLogistic() if task == "binary" else SoftmaxMultiClass(3)
    margin = np.zeros((n, obj.n_outputs))
    gh = obj.gh(obj.check_labels(y), margin)
    return X, binner, bins, gh


class RecordingProvider(LocalHistogramProvider):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.splits = []

    def build_histograms(self, nodes, row_sets):
        self.calls.append((list(nodes), [r.copy() for r in row_sets]))
        return super().build_histograms(nodes, row_sets)

    def split_rows(self, nodes, row_sets, splits):
        self.splits.append(list(nodes))
        return super().split_rows(nodes, row_sets, splits)


class TwoPartyProvider:
    """What a federated driver does, in plaintext: each party histograms its own
    columns (with its own max_bin), the label holder concatenates them, and only the
    owner of a split can partition the rows."""

    def __init__(self, parts):
        self.parts = parts  # list of (bins, n_bin_slots)
        self.gh = None

    def set_gradients(self, gh):
        self.gh = gh

    def build_histograms(self, nodes, row_sets):
        hists = [build_histograms(b, self.gh, s, row_sets) for b, s in self.parts]
        return concat_histograms(hists)[0]

    def split_rows(self, nodes, row_sets, splits):
        out = []
        for rows, split in zip(row_sets, splits):
            bins, slots = self.parts[split.block]
            code = bins[rows, split.feature].astype(int)
            out.append(np.where(code == slots - 1, split.default_left, code <= split.bin))
        return out


@pytest.mark.parametrize("policy", ["depthwise", "lossguide"])
def test_only_smaller_children_are_histogrammed(policy):
    _, binner, bins, gh = _setup()
    prov = RecordingProvider(bins, binner.n_bin_slots)
    params = GrowParams(max_depth=5, max_leaves=24 if policy == "lossguide" else 0,
                        grow_policy=policy)
    res = TreeGrower(params, prov).grow(gh)
    tree = res.tree
    assert isinstance(prov, HistogramProvider)
    assert prov.calls[0][0] == [0] and prov.calls[0][1][0].size == bins.shape[0]
    requested = [nid for ids, _ in prov.calls[1:] for nid in ids]
    parent = {int(c): p for p in range(tree.n_nodes) if tree.left[p] >= 0
              for c in (tree.left[p], tree.right[p])}
    for nid in requested:
        p = parent[nid]
        sib = tree.right[p] if tree.left[p] == nid else tree.left[p]
        assert tree.n_samples[nid] <= tree.n_samples[sib]
    # each parent contributes exactly one requested child
    assert len({parent[n] for n in requested}) == len(requested)
    # children at the depth limit are never histogrammed
    assert all(tree.depth[n] < params.max_depth for n in requested)
    split_nodes = [n for call in prov.splits for n in call]
    assert sorted(split_nodes) == np.flatnonzero(tree.left >= 0).tolist()
    if policy == "depthwise":
        # one histogram call and one split call per level
        assert len(prov.calls) == len(set(tree.depth[requested])) + 1
        assert [len(set(tree.depth[c])) for c in prov.splits] == [1] * len(prov.splits)
        assert len(prov.splits) == tree.max_depth
    else:
        assert all(len(c) == 1 for c in prov.splits)
    # rows are passed sorted and match the tree's bookkeeping
    for ids, rows in prov.calls:
        for nid, r in zip(ids, rows):
            assert np.all(np.diff(r) > 0) and r.size == tree.n_samples[nid]
    assert res.n_histogram_rows == sum(r.size for _, rs in prov.calls for r in rs)
    assert res.n_histogram_rows <= bins.shape[0] * (1 + 0.5 * params.max_depth)


@pytest.mark.parametrize("task", ["binary", "multi"])
def test_two_parties_with_different_max_bin_grow_the_same_tree(task):
    X, y = make_data(task, n=1500, nan=0.1, seed=4)
    ba, bb = QuantileBinner(16).fit(X[:, :3]), QuantileBinner(32).fit(X[:, 3:])
    ca, cb = ba.transform(X[:, :3]), bb.transform(X[:, 3:])
    obj = BinaryLogistic() if task == "binary" else SoftmaxMultiClass(3)
    gh = obj.gh(obj.check_labels(y), np.zeros((len(y), obj.n_outputs)))
    params = GrowParams(max_depth=4, learning_rate=0.3, split=SplitParams(min_child_weight=2))
    blocks = FeatureBlocks((3, 5))
    fed = TreeGrower(params, TwoPartyProvider([(ca, 17), (cb, 33)]), blocks=blocks).grow(gh)
    # the same data as one block: party A's missing code moved to the common slot
    ca_common = ca.astype(np.uint8).copy()
    ca_common[ca == 16] = 32
    local = LocalHistogramProvider(np.hstack([ca_common, cb]), 33, blocks)
    ref = TreeGrower(params, local, blocks=blocks).grow(gh)
    for name in ("left", "right", "block", "feature", "split_bin", "default_left", "value"):
        np.testing.assert_array_equal(getattr(fed.tree, name), getattr(ref.tree, name), name)
    assert set(fed.tree.block[fed.tree.left >= 0]) == {0, 1}
    np.testing.assert_array_equal(fed.positions, ref.positions)


def test_routing_binned_raw_and_decisions_agree():
    X, binner, bins, gh = _setup(n=3000)
    res = TreeGrower(GrowParams(max_depth=6), LocalHistogramProvider(bins, 33)).grow(gh)
    tree = res.tree
    tree.fill_thresholds(lambda b, f, k: binner.threshold(f, k))
    leaf_b = tree.apply_binned(bins, binner.missing_bin)
    np.testing.assert_array_equal(leaf_b, res.positions)
    assert np.all(tree.is_leaf[leaf_b])
    # unseen raw values route identically through thresholds and through bins
    rng = np.random.default_rng(9)
    Xt = rng.normal(size=(4000, X.shape[1])) * 1.5
    Xt[rng.random(Xt.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(tree.apply(Xt), tree.apply_binned(binner.transform(Xt), 32))
    # per-node decisions, as parties would compute them for their own nodes
    dec = np.zeros((Xt.shape[0], tree.n_nodes), dtype=bool)
    for j in np.flatnonzero(~tree.is_leaf):
        x = Xt[:, tree.feature[j]]
        dec[:, j] = np.where(np.isnan(x), tree.default_left[j], x <= tree.threshold[j])
    np.testing.assert_array_equal(tree.apply_decisions(dec), tree.apply(Xt))


def test_leaf_limits_and_subsampled_rows():
    _, _, bins, gh = _setup()
    for policy, depth in (("lossguide", 0), ("lossguide", 3), ("depthwise", 6)):
        params = GrowParams(max_depth=depth, max_leaves=7, grow_policy=policy)
        tree = TreeGrower(params, LocalHistogramProvider(bins, 33)).grow(gh).tree
        assert tree.n_leaves == 7
        if depth:
            assert tree.max_depth <= depth
    rows = np.arange(0, bins.shape[0], 3)
    res = TreeGrower(GrowParams(max_depth=3), LocalHistogramProvider(bins, 33)).grow(gh, rows)
    assert res.tree.n_samples[0] == rows.size
    assert np.all(res.positions[rows] >= 0) and np.sum(res.positions >= 0) == rows.size


def test_multi_output_tree_has_vector_leaves():
    _, _, bins, gh = _setup("multi")
    tree = TreeGrower(GrowParams(max_depth=3), LocalHistogramProvider(bins, 33)).grow(gh).tree
    assert tree.n_outputs == 3 and tree.value.shape == (tree.n_nodes, 3)
    assert tree.predict_binned(bins, 32).shape == (bins.shape[0], 3)


def test_json_round_trip():
    X, binner, bins, gh = _setup()
    tree = TreeGrower(GrowParams(max_depth=4), LocalHistogramProvider(bins, 33)).grow(gh).tree
    tree.fill_thresholds(lambda b, f, k: binner.threshold(f, k))
    text = json.dumps(tree.to_dict(), allow_nan=False)
    t2 = Tree.from_dict(json.loads(text))
    np.testing.assert_array_equal(t2.predict(X), tree.predict(X))
    np.testing.assert_array_equal(t2.threshold, tree.threshold)
    # a copy without thresholds (the label holder's view of passive splits)
    hidden = tree.to_dict()
    hidden["threshold"] = [None] * tree.n_nodes
    t3 = Tree.from_dict(hidden)
    with pytest.raises(DataError, match="thresholds"):
        t3.apply(X)
    np.testing.assert_array_equal(t3.apply_binned(bins, 32), tree.apply_binned(bins, 32))
    bad = tree.to_dict()
    bad["left"][0] = 0
    with pytest.raises(DataError):
        Tree.from_dict(bad)


def test_single_leaf_and_bad_params():
    bins = np.zeros((10, 2), dtype=np.uint8)  # nothing to split on
    gh = np.stack([np.linspace(-1, 1, 10) + 0.3, np.ones(10)], axis=1)
    res = TreeGrower(GrowParams(learning_rate=0.5), LocalHistogramProvider(bins, 33)).grow(gh)
    assert res.tree.n_nodes == 1
    np.testing.assert_allclose(res.tree.value[0, 0], -0.5 * 3.0 / 11.0)
    with pytest.raises(ConfigError, match="grow_policy"):
        GrowParams(grow_policy="leafwise")
    with pytest.raises(ConfigError, match="max_leaves"):
        GrowParams(max_depth=0)
