"""Tree structure, routing, and the histogram-driven tree grower.

:class:`Tree` stores a binary tree as flat arrays (node 0 is the root; node ids are
given in expansion order, children of a node are ``left[i]``/``right[i]``, ``-1`` for a
leaf). A split is described twice:

* by ``(block, feature, split_bin, default_left)`` — the block-local feature and bin
  code, which is all the label holder knows about a passive party's split;
* by ``threshold`` — the raw value (``x <= threshold`` goes left), known only to the
  party owning the feature; ``NaN`` where this copy of the tree does not know it.

:class:`TreeGrower` grows one tree from gradients, asking a :class:`HistogramProvider`
for histograms and row partitions. It performs histogram subtraction itself: for every
split it asks the provider for the histogram of the child with fewer rows only and
derives the sibling as ``parent - child``. A federated driver implements the provider
(encrypted histograms from passive parties, decrypted and concatenated; row partitions
from the owner of the split); :class:`LocalHistogramProvider` is the plaintext one.

Growth follows XGBoost's ``hist`` updater exactly (node numbering, level-by-level or
best-first order, tie-breaking, validity checks), so the result can be compared to
XGBoost tree by tree.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hefl.errors import ConfigError, DataError

from ._histogram import build_histograms, node_sum, subtract_histogram
from ._split import (
    RT_EPS,
    FeatureBlocks,
    SplitInfo,
    SplitParams,
    evaluate_splits,
    is_splittable,
    leaf_weights,
)

__all__ = [
    "GrowParams",
    "GrowResult",
    "HistogramProvider",
    "LocalHistogramProvider",
    "Tree",
    "TreeGrower",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _enc_float(v: float) -> float | str:
    # strict JSON has no inf/nan; thresholds of "everything left" splits are +/-inf
    if math.isfinite(v):
        return float(v)
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _dec_float(v: float | str | None) -> float:
    return float("nan") if v is None else float(v)


# =============================================================================== Tree
@dataclass(eq=False)
class Tree:
    """A regression tree with scalar (K = 1) or vector (K > 1) leaves.

    Attributes
    ----------
    left, right : ndarray of int32, shape (n_nodes,)
        Children ids, ``-1`` for leaves.
    block, feature : ndarray of int32, shape (n_nodes,)
        Owning block and block-local feature of each split (``-1`` for leaves).
    split_bin : ndarray of int32, shape (n_nodes,)
        Bin codes ``<= split_bin`` go left.
    threshold : ndarray of float64, shape (n_nodes,)
        Raw values ``<= threshold`` go left; NaN where unknown to this copy.
    default_left : ndarray of bool, shape (n_nodes,)
        Direction of missing values.
    value : ndarray of float64, shape (n_nodes, K)
        Node weight times learning rate; the prediction of a leaf.
    gain : ndarray of float64, shape (n_nodes,)
        Loss change of each split (0 for leaves).
    cover : ndarray of float64, shape (n_nodes,)
        Hessian sum of each node (summed over outputs).
    n_samples : ndarray of int64, shape (n_nodes,)
        Training rows that reached each node.
    depth : ndarray of int32, shape (n_nodes,)
    blocks : FeatureBlocks
        Column layout used to map ``(block, feature)`` to a global column.
    """

    left: NDArray[np.int32]
    right: NDArray[np.int32]
    block: NDArray[np.int32]
    feature: NDArray[np.int32]
    split_bin: NDArray[np.int32]
    threshold: FloatArray
    default_left: NDArray[np.bool_]
    value: FloatArray
    gain: FloatArray
    cover: FloatArray
    n_samples: NDArray[np.int64]
    depth: NDArray[np.int32]
    blocks: FeatureBlocks = field(default_factory=lambda: FeatureBlocks((0,)))

    # ------------------------------------------------------------------ shape
    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.left.shape[0])

    @property
    def n_outputs(self) -> int:
        """Length K of the leaf values."""
        return int(self.value.shape[1])

    @property
    def is_leaf(self) -> NDArray[np.bool_]:
        """Leaf mask, shape (n_nodes,)."""
        return self.left < 0

    @property
    def n_leaves(self) -> int:
        """Number of leaves."""
        return int(self.is_leaf.sum())

    @property
    def max_depth(self) -> int:
        """Depth of the deepest node (root = 0)."""
        return int(self.depth.max()) if self.n_nodes else 0

    @property
    def global_feature(self) -> NDArray[np.int64]:
        """Global column of each split, ``-1`` for leaves."""
        off = self.blocks.offsets
        g = np.where(self.is_leaf, -1, off[np.maximum(self.block, 0)] + self.feature)
        return g.astype(np.int64)

    # ---------------------------------------------------------------- routing
    def _route(self, go_left: Callable[[IntArray, IntArray], NDArray[np.bool_]], n: int
               ) -> IntArray:
        node = np.zeros(n, dtype=np.intp)
        active = np.arange(n, dtype=np.intp)
        is_leaf = self.is_leaf
        # one vectorised step per tree level, never one per sample
        for _ in range(self.max_depth + 1):
            active = active[~is_leaf[node[active]]]
            if active.size == 0:
                break
            cur = node[active]
            gl = go_left(active, cur)
            node[active] = np.where(gl, self.left[cur], self.right[cur])
        return node

    def apply_binned(self, bins: NDArray[np.integer[Any]], missing_bin: int) -> IntArray:
        """Leaf reached by each row of a binned matrix (global column layout).

        Parameters
        ----------
        bins : ndarray of shape (n_samples, n_features)
            Bin codes, ``missing_bin`` for missing values.
        missing_bin : int

        Returns
        -------
        leaf : ndarray of int, shape (n_samples,)
        """
        gf = self.global_feature

        def go_left(rows: IntArray, nodes: IntArray) -> NDArray[np.bool_]:
            code = bins[rows, gf[nodes]].astype(np.int64)
            return np.where(code == missing_bin, self.default_left[nodes],
                            code <= self.split_bin[nodes])

        return self._route(go_left, bins.shape[0])

    def apply(self, X: FloatArray) -> IntArray:
        """Leaf reached by each row of raw features, using the thresholds.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Raw values in the global column layout; NaN is missing.
        """
        X = np.asarray(X, dtype=np.float64)
        internal = ~self.is_leaf
        if np.any(np.isnan(self.threshold[internal])):
            raise DataError("this tree copy lacks some raw thresholds; route with "
                            "apply_binned() or apply_decisions()")
        gf = self.global_feature

        def go_left(rows: IntArray, nodes: IntArray) -> NDArray[np.bool_]:
            x = X[rows, gf[nodes]]
            with np.errstate(invalid="ignore"):
                return np.where(np.isnan(x), self.default_left[nodes], x <= self.threshold[nodes])

        return self._route(go_left, X.shape[0])

    def apply_decisions(self, go_left: NDArray[np.bool_]) -> IntArray:
        """Leaf of each row from per-node decisions.

        In federated prediction every party evaluates its own splits for all rows and
        the decisions are combined here without revealing thresholds.

        Parameters
        ----------
        go_left : ndarray of bool, shape (n_samples, n_nodes)
            ``go_left[i, j]``: row ``i`` would go left at node ``j`` (ignored for leaves).
        """
        dec = np.asarray(go_left, dtype=bool)
        if dec.ndim != 2 or dec.shape[1] != self.n_nodes:
            raise DataError(f"decisions must have shape (n, {self.n_nodes}), got {dec.shape}")
        return self._route(lambda rows, nodes: dec[rows, nodes], dec.shape[0])

    def predict(self, X: FloatArray) -> FloatArray:
        """Leaf values for raw features, shape (n_samples, K)."""
        return self.value[self.apply(X)]

    def predict_binned(self, bins: NDArray[np.integer[Any]], missing_bin: int) -> FloatArray:
        """Leaf values for binned features, shape (n_samples, K)."""
        return self.value[self.apply_binned(bins, missing_bin)]

    def fill_thresholds(self, threshold_of: Callable[[int, int, int], float],
                        owners: Sequence[int] | None = None) -> None:
        """Set raw thresholds from ``threshold_of(block, feature, bin)``.

        Parameters
        ----------
        threshold_of : callable
            E.g. ``lambda b, f, k: binners[b].threshold(f, k)``.
        owners : sequence of int, optional
            Only fill splits owned by these blocks (a party knows only its own).
        """
        for i in np.flatnonzero(~self.is_leaf):
            b = int(self.block[i])
            if owners is None or b in owners:
                self.threshold[i] = threshold_of(b, int(self.feature[i]), int(self.split_bin[i]))

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (strict JSON: non-finite thresholds become strings)."""
        return {
            "kind": "Tree",
            "blocks": list(self.blocks.sizes),
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "block": self.block.tolist(),
            "feature": self.feature.tolist(),
            "split_bin": self.split_bin.tolist(),
            "threshold": [_enc_float(float(v)) for v in self.threshold],
            "default_left": self.default_left.tolist(),
            "value": self.value.tolist(),
            "gain": self.gain.tolist(),
            "cover": self.cover.tolist(),
            "n_samples": self.n_samples.tolist(),
            "depth": self.depth.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        """Rebuild a tree written by :meth:`to_dict`."""
        if data.get("kind") != "Tree":
            raise DataError(f"not a Tree description (kind={data.get('kind')!r})")
        n = len(data["left"])
        value = np.asarray(data["value"], dtype=np.float64).reshape(n, -1)
        tree = cls(
            left=np.asarray(data["left"], dtype=np.int32),
            right=np.asarray(data["right"], dtype=np.int32),
            block=np.asarray(data["block"], dtype=np.int32),
            feature=np.asarray(data["feature"], dtype=np.int32),
            split_bin=np.asarray(data["split_bin"], dtype=np.int32),
            threshold=np.array([_dec_float(v) for v in data["threshold"]], dtype=np.float64),
            default_left=np.asarray(data["default_left"], dtype=bool),
            value=value,
            gain=np.asarray(data["gain"], dtype=np.float64),
            cover=np.asarray(data["cover"], dtype=np.float64),
            n_samples=np.asarray(data["n_samples"], dtype=np.int64),
            depth=np.asarray(data["depth"], dtype=np.int32),
            blocks=FeatureBlocks(tuple(int(s) for s in data["blocks"])),
        )
        tree._check()
        return tree

    def _check(self) -> None:
        n = self.n_nodes
        for name in ("right", "block", "feature", "split_bin", "threshold", "default_left",
                     "gain", "cover", "n_samples", "depth"):
            if getattr(self, name).shape != (n,):
                raise DataError(f"tree field {name!r} has shape {getattr(self, name).shape}, "
                                f"expected ({n},)")
        if self.value.shape[0] != n:
            raise DataError(f"tree values have {self.value.shape[0]} rows for {n} nodes")
        internal = self.left >= 0
        kids = np.concatenate([self.left[internal], self.right[internal]])
        if np.any(kids <= 0) or np.any(kids >= n) or np.unique(kids).size != kids.size:
            raise DataError("tree children are not a valid binary tree")


# ================================================================ grower contract
@runtime_checkable
class HistogramProvider(Protocol):
    """What :class:`TreeGrower` needs from the parties holding the features.

    Rows are identified by their index in the aligned training set and are always
    passed sorted ascending. Node ids are the grower's (root 0, children numbered in
    expansion order), so a provider may cache per-node state.

    A provider may also define ``set_gradients(gh)``; :meth:`TreeGrower.grow` calls it
    once per tree, before any histogram, with the ``(n_samples, 2K)`` array ``[g | h]``
    (the federated driver encrypts and ships it to the passive parties there).
    """

    def build_histograms(
        self, nodes: Sequence[int], row_sets: Sequence[IntArray]
    ) -> FloatArray:
        """Histograms of the current ``gh`` over each row set.

        Returns
        -------
        ndarray of shape (len(nodes), n_features, n_bin_slots, 2*K)
            All blocks concatenated along the feature axis (see
            :func:`~hefl.models.secureboost._split.concat_histograms`), in the layout of
            the grower's :class:`FeatureBlocks`.
        """
        ...

    def split_rows(
        self, nodes: Sequence[int], row_sets: Sequence[IntArray], splits: Sequence[SplitInfo]
    ) -> Sequence[NDArray[np.bool_]]:
        """Apply each split to the rows of its node; True where a row goes left.

        Only the party owning ``split.block`` can evaluate a split: rows with bin code
        ``<= split.bin`` of block-local ``split.feature`` go left, missing values follow
        ``split.default_left``. All splits of one tree level come in one call, so a
        federated driver needs one exchange per level and owner.

        Returns
        -------
        list of ndarray of bool
            One mask per node, aligned with its rows.
        """
        ...


class LocalHistogramProvider:
    """Plaintext provider over a binned matrix held in one place.

    Parameters
    ----------
    bins : ndarray of shape (n_samples, n_features)
        Bin codes in the global column layout.
    n_bin_slots : int
        ``max_bin + 1``; the missing code is ``n_bin_slots - 1``.
    blocks : FeatureBlocks, optional
        Column layout; one block by default.

    Attributes
    ----------
    gh : ndarray of shape (n_samples, 2*K)
        Set before each tree (the grower sets it from :meth:`TreeGrower.grow`).
    n_histogram_rows : int
        Rows histogrammed so far (for checking histogram subtraction).
    """

    def __init__(self, bins: NDArray[np.integer[Any]], n_bin_slots: int,
                 blocks: FeatureBlocks | None = None) -> None:
        self.bins = bins
        self.n_bin_slots = int(n_bin_slots)
        self.blocks = blocks if blocks is not None else FeatureBlocks.single(bins.shape[1])
        self.gh: FloatArray = np.zeros((bins.shape[0], 2))
        self.n_histogram_rows = 0

    def set_gradients(self, gh: FloatArray) -> None:
        """Gradients ``[g | h]`` used by subsequent histograms."""
        self.gh = gh

    def build_histograms(self, nodes: Sequence[int], row_sets: Sequence[IntArray]
                         ) -> FloatArray:
        self.n_histogram_rows += int(sum(r.size for r in row_sets))
        return build_histograms(self.bins, self.gh, self.n_bin_slots, row_sets)

    def split_rows(
        self, nodes: Sequence[int], row_sets: Sequence[IntArray], splits: Sequence[SplitInfo]
    ) -> list[NDArray[np.bool_]]:
        missing = self.n_bin_slots - 1
        out = []
        for rows, split in zip(row_sets, splits):
            col = self.blocks.global_index(split.block, split.feature)
            code = self.bins[rows, col].astype(np.int64)
            out.append(np.where(code == missing, split.default_left, code <= split.bin))
        return out


# ======================================================================== grower
@dataclass(frozen=True)
class GrowParams:
    """How a tree grows.

    Parameters
    ----------
    max_depth : int, default=6
        Maximum depth (root = 0); 0 means unlimited (needs ``max_leaves``).
    max_leaves : int, default=0
        Maximum number of leaves; 0 means unlimited.
    grow_policy : {"depthwise", "lossguide"}
        Level by level (XGBoost ``depthwise``) or best loss change first
        (``lossguide``, leaf-wise).
    learning_rate : float, default=0.3
        Shrinkage applied to leaf weights.
    split : SplitParams
        Regularisation.
    """

    max_depth: int = 6
    max_leaves: int = 0
    grow_policy: str = "depthwise"
    learning_rate: float = 0.3
    split: SplitParams = field(default_factory=SplitParams)

    def __post_init__(self) -> None:
        if self.grow_policy not in ("depthwise", "lossguide"):
            raise ConfigError(
                f"grow_policy must be 'depthwise' or 'lossguide', got {self.grow_policy!r}"
            )
        if int(self.max_depth) < 0 or int(self.max_leaves) < 0:
            raise ConfigError(f"max_depth and max_leaves must be >= 0, got "
                              f"{self.max_depth} and {self.max_leaves}")
        if int(self.max_depth) == 0 and int(self.max_leaves) == 0:
            raise ConfigError("max_depth=0 (unlimited) needs max_leaves > 0")
        if self.max_leaves == 1:
            raise ConfigError("max_leaves must be 0 (unlimited) or >= 2")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass(eq=False)
class GrowResult:
    """A grown tree and where the training rows ended up.

    Attributes
    ----------
    tree : Tree
    positions : ndarray of int, shape (n_samples,)
        Leaf of each row passed to :meth:`TreeGrower.grow`, ``-1`` for the others.
    n_histogram_calls : int
        Calls made to :meth:`HistogramProvider.build_histograms`.
    n_histogram_rows : int
        Rows requested from the provider in total (histogram subtraction keeps this at
        most about half of what building every node would cost).
    """

    tree: Tree
    positions: IntArray
    n_histogram_calls: int = 0
    n_histogram_rows: int = 0


@dataclass(eq=False)
class _Node:
    rows: IntArray
    sums: FloatArray
    depth: int
    hist: FloatArray | None = None
    split: SplitInfo | None = None


class TreeGrower:
    """Grow one tree from gradients through a :class:`HistogramProvider`.

    Parameters
    ----------
    params : GrowParams
    provider : HistogramProvider
    blocks : FeatureBlocks, optional
        Column layout of the provider's histograms; one block by default (taken from
        the first histogram).
    feature_mask : ndarray of bool, optional
        Columns allowed to split (column sampling by tree).

    Notes
    -----
    Call pattern for one tree, for ``depthwise`` growth::

        set_gradients(gh)                            # if the provider has it
        build_histograms([0], [all rows])            # root
        repeat per level:
            split_rows(nodes, rows, splits)          # every node split on this level
            build_histograms(smaller children, ...)  # one call for the whole level

    ``lossguide`` growth makes one ``split_rows`` and one ``build_histograms`` call (for
    one child) per split. Children at the depth or leaf limit are never histogrammed.
    """

    def __init__(self, params: GrowParams, provider: HistogramProvider, *,
                 blocks: FeatureBlocks | None = None,
                 feature_mask: NDArray[np.bool_] | None = None) -> None:
        self.params = params
        self.provider = provider
        self.blocks = blocks
        self.feature_mask = feature_mask

    # ---------------------------------------------------------------- helpers
    def _child_can_split(self, depth: int, n_leaves: int) -> bool:
        p = self.params
        depth_ok = p.max_depth == 0 or depth + 1 < p.max_depth
        return depth_ok and (p.max_leaves == 0 or n_leaves < p.max_leaves)

    def _can_expand(self, node: _Node, n_leaves: int) -> bool:
        p = self.params
        if not is_splittable(node.split, p.split):
            return False
        depth_ok = p.max_depth == 0 or node.depth < p.max_depth
        return depth_ok and (p.max_leaves == 0 or n_leaves < p.max_leaves)

    def _evaluate(self, nodes: list[_Node]) -> None:
        if not nodes:
            return
        hists = np.stack([n.hist for n in nodes])  # type: ignore[misc]
        sums = np.stack([n.sums for n in nodes])
        if self.blocks is None:
            self.blocks = FeatureBlocks.single(hists.shape[1])
        splits = evaluate_splits(hists, sums, self.params.split, blocks=self.blocks,
                                 feature_mask=self.feature_mask)
        for n, s in zip(nodes, splits):
            n.split = s

    # ------------------------------------------------------------------- grow
    def grow(self, gh: FloatArray, rows: IntArray | None = None) -> GrowResult:
        """Grow a tree.

        Parameters
        ----------
        gh : ndarray of shape (n_samples, 2*K)
            ``[g | h]`` of every training row (only ``rows`` are used). Also handed to
            the provider through ``set_gradients`` when it has one.
        rows : ndarray of int, optional
            Rows of this tree (row subsampling); all rows by default.

        Returns
        -------
        GrowResult
        """
        gh = np.asarray(gh, dtype=np.float64)
        if gh.ndim != 2 or gh.shape[1] % 2:
            raise DataError(f"gh must have shape (n_samples, 2K), got {gh.shape}")
        n_total = gh.shape[0]
        k = gh.shape[1] // 2
        root_rows = (np.arange(n_total, dtype=np.intp) if rows is None
                     else np.unique(np.asarray(rows, dtype=np.intp)))
        setter = getattr(self.provider, "set_gradients", None)
        if callable(setter):
            setter(gh)

        calls = 0
        hist_rows = 0

        def fetch(ids: list[int], row_sets: list[IntArray]) -> FloatArray:
            nonlocal calls, hist_rows
            calls += 1
            hist_rows += int(sum(r.size for r in row_sets))
            out = np.asarray(self.provider.build_histograms(ids, row_sets), dtype=np.float64)
            if out.ndim != 4 or out.shape[0] != len(ids) or out.shape[-1] != 2 * k:
                raise DataError(f"provider returned histograms of shape {out.shape} for "
                                f"{len(ids)} nodes and K={k}")
            return out

        nodes: list[_Node] = [_Node(root_rows, node_sum(gh, root_rows), 0)]
        splits: dict[int, SplitInfo] = {}
        children: dict[int, tuple[int, int]] = {}
        n_leaves = 1

        if root_rows.size > 0:
            nodes[0].hist = fetch([0], [root_rows])[0]
            self._evaluate([nodes[0]])

        def apply(ids: list[int]) -> list[tuple[int, int, int]]:
            # one provider call for all splits of a level; children get ids in order
            chosen: list[SplitInfo] = []
            for i in ids:
                s = nodes[i].split
                assert s is not None  # _can_expand() checked it
                chosen.append(s)
            masks = self.provider.split_rows(ids, [nodes[i].rows for i in ids], chosen)
            if len(masks) != len(ids):
                raise DataError(f"split_rows returned {len(masks)} masks for {len(ids)} nodes")
            out = []
            for nid, split, m in zip(ids, chosen, masks):
                node = nodes[nid]
                mask = np.asarray(m, dtype=bool)
                if mask.shape != node.rows.shape:
                    raise DataError(f"split_rows for node {nid} returned {mask.shape}, "
                                    f"expected {node.rows.shape}")
                lid, rid = len(nodes), len(nodes) + 1
                nodes.append(_Node(node.rows[mask], split.left_sum, node.depth + 1))
                nodes.append(_Node(node.rows[~mask], split.right_sum, node.depth + 1))
                splits[nid] = split
                children[nid] = (lid, rid)
                out.append((nid, lid, rid))
            return out

        def histogram_children(pairs: list[tuple[int, int, int]]) -> None:
            # build the smaller child of each pair in one call, derive the sibling
            small, large = [], []
            for pid, lid, rid in pairs:
                if nodes[lid].rows.size <= nodes[rid].rows.size:
                    small.append(lid)
                    large.append(rid)
                else:
                    small.append(rid)
                    large.append(lid)
            built = fetch(small, [nodes[i].rows for i in small])
            for (pid, _, _), s, big, h in zip(pairs, small, large, built):
                nodes[s].hist = h
                parent_hist = nodes[pid].hist
                assert parent_hist is not None
                nodes[big].hist = subtract_histogram(parent_hist, h)
                nodes[pid].hist = None  # parent histogram no longer needed
            self._evaluate([nodes[i] for p in pairs for i in p[1:]])

        if self.params.grow_policy == "depthwise":
            frontier = [0] if nodes[0].split is not None else []
            while frontier:
                pairs: list[tuple[int, int, int]] = []
                next_frontier: list[int] = []
                to_split: list[int] = []
                for nid in sorted(frontier):  # XGBoost expands a level in node-id order
                    if not self._can_expand(nodes[nid], n_leaves):
                        nodes[nid].hist = None
                        continue
                    n_leaves += 1
                    to_split.append(nid)
                expanded = apply(to_split) if to_split else []
                for nid, lid, rid in expanded:
                    if self._child_can_split(nodes[nid].depth, n_leaves):
                        pairs.append((nid, lid, rid))
                    else:
                        nodes[nid].hist = None
                if pairs:
                    histogram_children(pairs)
                    for _, lid, rid in pairs:
                        next_frontier.extend([lid, rid])
                frontier = [i for i in next_frontier if nodes[i].split is not None]
        else:
            heap: list[tuple[float, int]] = []

            def push(nid: int) -> None:
                s = nodes[nid].split
                if s is not None and np.float32(s.gain) > np.float32(RT_EPS):
                    # largest float32 loss first, ties to the older (smaller) node id
                    heapq.heappush(heap, (-float(np.float32(s.gain)), nid))

            push(0)
            while heap:
                _, nid = heapq.heappop(heap)
                if not self._can_expand(nodes[nid], n_leaves):
                    nodes[nid].hist = None
                    continue
                n_leaves += 1
                _, lid, rid = apply([nid])[0]
                if self._child_can_split(nodes[nid].depth, n_leaves):
                    histogram_children([(nid, lid, rid)])
                    push(lid)
                    push(rid)
                else:
                    nodes[nid].hist = None

        tree = self._to_tree(nodes, splits, children, k)
        positions = np.full(n_total, -1, dtype=np.intp)
        for leaf in np.flatnonzero(tree.is_leaf):
            positions[nodes[leaf].rows] = leaf
        return GrowResult(tree=tree, positions=positions, n_histogram_calls=calls,
                          n_histogram_rows=hist_rows)

    def _to_tree(self, nodes: list[_Node], splits: dict[int, SplitInfo],
                 children: dict[int, tuple[int, int]], k: int) -> Tree:
        n = len(nodes)
        left = np.full(n, -1, dtype=np.int32)
        right = np.full(n, -1, dtype=np.int32)
        block = np.full(n, -1, dtype=np.int32)
        feature = np.full(n, -1, dtype=np.int32)
        split_bin = np.zeros(n, dtype=np.int32)
        default_left = np.zeros(n, dtype=bool)
        gain = np.zeros(n, dtype=np.float64)
        for nid, (lid, rid) in children.items():
            s = splits[nid]
            left[nid], right[nid] = lid, rid
            block[nid], feature[nid] = s.block, s.feature
            split_bin[nid], default_left[nid], gain[nid] = s.bin, s.default_left, s.gain
        sums = np.stack([nd.sums for nd in nodes])
        value = leaf_weights(sums, self.params.split) * self.params.learning_rate
        blocks = self.blocks if self.blocks is not None else FeatureBlocks((0,))
        return Tree(
            left=left, right=right, block=block, feature=feature, split_bin=split_bin,
            threshold=np.full(n, np.nan), default_left=default_left,
            value=value.reshape(n, k), gain=gain, cover=sums[:, k:].sum(axis=1),
            n_samples=np.array([nd.rows.size for nd in nodes], dtype=np.int64),
            depth=np.array([nd.depth for nd in nodes], dtype=np.int32),
            blocks=blocks,
        )
