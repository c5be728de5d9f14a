"""Split finding on (decrypted) gradient histograms; runs on the active party.

For a node with totals ``G, H`` and a candidate "bin <= b" with left sums ``G_L, H_L``
(right = node - left) the loss change is XGBoost's::

    loss_chg = G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)

i.e. twice the textbook ``1/2[...]`` gain, and ``gamma`` is *not* subtracted: like
XGBoost (``min_split_loss``) a node is split only when ``loss_chg >= gamma`` (and
``loss_chg > 1e-6``). A candidate is considered only when both children have
``H >= min_child_weight``. Missing values sit in their own histogram slot; each feature
is scanned twice, missing right ("forward") and missing left ("backward"), and the
better direction becomes the node's default direction. The backward scan is skipped for
features with an empty missing slot in the node.

Multi-output nodes (one tree with vector leaves, XGBoost's
``multi_strategy="multi_output_tree"``) sum the per-output gains; an output whose
hessian is below ``min_child_weight`` in a child gets weight 0 there and contributes no
gain, as in XGBoost.

Ties are broken exactly like XGBoost: loss changes are compared as float32, the lowest
feature index wins, and within a feature the first candidate in scan order (forward by
increasing bin, then backward by decreasing bin) wins.

Histograms of several parties are concatenated along the feature axis;
:class:`FeatureBlocks` remembers which block (party) owns which columns so that a split
names its owner and a block-local feature index, never a raw threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from hefl.errors import ConfigError, DataError

__all__ = [
    "FeatureBlocks",
    "SplitInfo",
    "SplitParams",
    "concat_histograms",
    "evaluate_splits",
    "find_best_split",
    "is_splittable",
    "leaf_weights",
    "node_gain",
]

RT_EPS = 1e-6  # XGBoost's kRtEps: smaller loss changes are never split on

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SplitParams:
    """Regularisation used by split finding and leaf values.

    Parameters
    ----------
    reg_lambda : float, default=1.0
        L2 penalty on leaf weights (XGBoost ``lambda``).
    gamma : float, default=0.0
        Minimum loss change to split a node (XGBoost ``min_split_loss``).
    min_child_weight : float, default=1.0
        Minimum hessian sum of a child.
    """

    reg_lambda: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("reg_lambda", "gamma", "min_child_weight"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class FeatureBlocks:
    """Which columns of a concatenated histogram belong to which block (party).

    Parameters
    ----------
    sizes : tuple of int
        Number of features of each block, in concatenation order.
    """

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if any(int(s) < 0 for s in self.sizes):
            raise ConfigError(f"block sizes must be >= 0, got {self.sizes}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))

    @classmethod
    def single(cls, n_features: int) -> FeatureBlocks:
        """One block holding every feature."""
        return cls((int(n_features),))

    @property
    def n_features(self) -> int:
        """Total number of features."""
        return int(sum(self.sizes))

    @property
    def offsets(self) -> NDArray[np.int64]:
        """First global column of each block, shape (n_blocks,)."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def locate(self, global_feature: int) -> tuple[int, int]:
        """``(block, local feature)`` of a global column index."""
        if not 0 <= global_feature < self.n_features:
            raise DataError(f"feature {global_feature} outside [0, {self.n_features})")
        ends = np.cumsum(self.sizes)
        block = int(np.searchsorted(ends, global_feature, side="right"))
        return block, int(global_feature - self.offsets[block])

    def global_index(self, block: int, feature: int) -> int:
        """Global column of ``feature`` of ``block``."""
        if not 0 <= feature < self.sizes[block]:
            raise DataError(f"feature {feature} outside block {block} of size {self.sizes[block]}")
        return int(self.offsets[block] + feature)


@dataclass(frozen=True, eq=False)
class SplitInfo:
    """Best split of one node.

    Attributes
    ----------
    gain : float
        XGBoost loss change (float32 precision, see module docstring).
    block : int
        Block (party) owning the feature.
    feature : int
        Feature index local to ``block``.
    global_feature : int
        Feature index in the concatenated histogram.
    bin : int
        Rows with ``bin_code <= bin`` go left; ``-1`` sends only missing values left.
    default_left : bool
        Direction of missing values.
    left_sum, right_sum : ndarray of shape (2*K,)
        ``[G | H]`` of the two children.
    """

    gain: float
    block: int
    feature: int
    global_feature: int
    bin: int
    default_left: bool
    left_sum: FloatArray = field(repr=False)
    right_sum: FloatArray = field(repr=False)

    def split_id(self, n_bin_slots: int) -> int:
        """Opaque block-local id of ``(feature, bin)``: ``feature * n_bin_slots + bin + 1``.

        Lets the owning party look up its private threshold from a single integer.
        """
        return int(self.feature * n_bin_slots + self.bin + 1)

    @staticmethod
    def decode_split_id(split_id: int, n_bin_slots: int) -> tuple[int, int]:
        """Inverse of :meth:`split_id`: ``(feature, bin)``."""
        f, r = divmod(int(split_id) - 1, n_bin_slots)
        return f, r


def concat_histograms(
    parts: Sequence[FloatArray],
) -> tuple[FloatArray, FeatureBlocks]:
    """Concatenate per-party histograms along the feature axis.

    Parameters
    ----------
    parts : sequence of ndarray of shape (..., n_features_i, n_bin_slots_i, n_channels)
        One histogram (or stack of node histograms) per block; leading axes must agree.
        Blocks with fewer slots are padded with empty value bins, their missing slot
        staying last, so block-local bin indices keep their meaning.

    Returns
    -------
    hist : ndarray of shape (..., sum n_features_i, max n_bin_slots_i, n_channels)
    blocks : FeatureBlocks
    """
    if not parts:
        raise DataError("no histograms to concatenate")
    arrs = [np.asarray(p, dtype=np.float64) for p in parts]
    lead = arrs[0].shape[:-3]
    chans = arrs[0].shape[-1]
    for a in arrs:
        if a.ndim < 3 or a.shape[:-3] != lead or a.shape[-1] != chans:
            raise DataError(f"histogram shapes do not line up: {[x.shape for x in arrs]}")
    slots = max(a.shape[-2] for a in arrs)
    padded = []
    for a in arrs:
        s = a.shape[-2]
        if s < slots:
            pad = np.zeros(a.shape[:-2] + (slots - s, chans))
            a = np.concatenate([a[..., : s - 1, :], pad, a[..., s - 1 :, :]], axis=-2)
        padded.append(a)
    hist = np.concatenate(padded, axis=-3)
    return hist, FeatureBlocks(tuple(a.shape[-3] for a in arrs))


# --------------------------------------------------------------------- leaf maths
def leaf_weights(sums: FloatArray, params: SplitParams) -> FloatArray:
    """Newton leaf weights ``-G/(H+lambda)`` (before the learning rate).

    Parameters
    ----------
    sums : ndarray of shape (..., 2*K)
        ``[G | H]``.

    Returns
    -------
    w : ndarray of shape (..., K)
        0 where ``H < min_child_weight`` or ``H <= 0`` (XGBoost's ``CalcWeight``).
    """
    s = np.asarray(sums, dtype=np.float64)
    k = s.shape[-1] // 2
    g, h = s[..., :k], s[..., k:]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = -g / (h + params.reg_lambda)
    return np.where((h < params.min_child_weight) | (h <= 0.0), 0.0, w)


def _gain_single(g: FloatArray, h: FloatArray, params: SplitParams) -> FloatArray:
    # XGBoost CalcGain: G^2/(H+lambda), 0 below min_child_weight
    with np.errstate(divide="ignore", invalid="ignore"):
        val = g * g / (h + params.reg_lambda)
    return np.where(h < params.min_child_weight, 0.0, val)


def _gain_multi(g: FloatArray, h: FloatArray, params: SplitParams) -> FloatArray:
    # XGBoost CalcGainGivenWeight summed over outputs, with float32 weights as it stores them
    with np.errstate(divide="ignore", invalid="ignore"):
        w = -g / (h + params.reg_lambda)
    w = np.where((h < params.min_child_weight) | (h <= 0.0), 0.0, w)
    w = w.astype(np.float32).astype(np.float64)
    return (-(2.0 * g * w + (h + params.reg_lambda) * w * w)).sum(axis=-1)


def node_gain(sums: FloatArray, params: SplitParams) -> FloatArray:
    """Structure score of node(s) with totals ``sums`` (..., 2K): the ``G^2/(H+lambda)`` term."""
    s = np.asarray(sums, dtype=np.float64)
    k = s.shape[-1] // 2
    g, h = s[..., :k], s[..., k:]
    if k == 1:
        return _gain_single(g[..., 0], h[..., 0], params)
    return _gain_multi(g, h, params)


# -------------------------------------------------------------------- evaluation
def evaluate_splits(
    hists: FloatArray,
    node_sums: FloatArray,
    params: SplitParams,
    *,
    blocks: FeatureBlocks | None = None,
    feature_mask: NDArray[np.bool_] | None = None,
) -> list[SplitInfo | None]:
    """Best split of each node from its histogram.

    Parameters
    ----------
    hists : ndarray of shape (n_nodes, n_features, n_bin_slots, 2*K)
        Node histograms (last slot = missing), e.g. from :func:`concat_histograms`.
    node_sums : ndarray of shape (n_nodes, 2*K)
        ``[G | H]`` of each node, including its missing values.
    params : SplitParams
    blocks : FeatureBlocks, optional
        Feature ownership; one block by default.
    feature_mask : ndarray of bool of shape (n_features,), optional
        Features allowed to split (column sampling).

    Returns
    -------
    list of SplitInfo or None
        ``None`` where no candidate satisfies ``min_child_weight`` with a positive loss
        change. Whether the node should actually be split is decided by
        :func:`is_splittable`.
    """
    h4 = np.asarray(hists, dtype=np.float64)
    if h4.ndim != 4 or h4.shape[-1] % 2 or h4.shape[2] < 2:
        raise DataError(f"hists must have shape (nodes, features, slots>=2, 2K), got {h4.shape}")
    n_nodes, n_feat, n_slots, n_chan = h4.shape
    k = n_chan // 2
    parent = np.asarray(node_sums, dtype=np.float64).reshape(n_nodes, n_chan)
    if blocks is None:
        blocks = FeatureBlocks.single(n_feat)
    elif blocks.n_features != n_feat:
        raise DataError(f"blocks cover {blocks.n_features} features, histogram has {n_feat}")
    if n_feat == 0:
        return [None] * n_nodes

    vals = h4[:, :, : n_slots - 1, :]
    missing = h4[:, :, n_slots - 1, :]
    p = parent[:, None, None, :]
    # forward scan: left = bins <= b, missing right (XGBoost accumulates left, right = P - left)
    fwd_left = np.cumsum(vals, axis=2)
    fwd_right = p - fwd_left
    # backward scan: right = bins >= i accumulated from the top, missing left, b = i - 1
    bwd_right = np.cumsum(vals[:, :, ::-1, :], axis=2)
    bwd_left = p - bwd_right
    left = np.concatenate([fwd_left, bwd_left], axis=2)
    right = np.concatenate([fwd_right, bwd_right], axis=2)
    nb = n_slots - 1
    cand_bin = np.concatenate([np.arange(nb), np.arange(nb - 2, -2, -1)])
    cand_dl = np.concatenate([np.zeros(nb, bool), np.ones(nb, bool)])

    hl, hr = left[..., k:], right[..., k:]
    mcw = params.min_child_weight
    if k == 1:
        valid = (hl[..., 0] >= mcw) & (hr[..., 0] >= mcw)
        children = _gain_single(left[..., 0], hl[..., 0], params) + _gain_single(
            right[..., 0], hr[..., 0], params
        )
    else:
        # XGBoost's multi-output evaluator puts no min_child_weight bound on a child:
        # an output whose hessian is below it just gets weight 0 (and no gain) there
        valid = np.ones(hl.shape[:-1], dtype=bool)
        children = _gain_multi(left[..., :k], hl, params) + _gain_multi(
            right[..., :k], hr, params
        )
    root = node_gain(parent, params)[:, None, None]
    with np.errstate(invalid="ignore", over="ignore"):
        loss = (children - root).astype(np.float32)
    # XGBoost skips non-finite loss changes (0/0 or G^2/0 when lambda = 0)
    loss[~valid | ~np.isfinite(loss)] = -np.inf
    has_missing = np.any(missing != 0.0, axis=-1)  # (nodes, features)
    loss[:, :, nb:] = np.where(has_missing[:, :, None], loss[:, :, nb:], -np.inf)
    if feature_mask is not None:
        fm = np.asarray(feature_mask, dtype=bool).reshape(-1)
        if fm.size != n_feat:
            raise DataError(f"feature_mask has {fm.size} entries for {n_feat} features")
        loss[:, ~fm, :] = -np.inf

    flat = loss.reshape(n_nodes, -1)
    best = np.argmax(flat, axis=1)  # first maximum = XGBoost's tie-breaking order
    out: list[SplitInfo | None] = []
    n_cand = 2 * nb
    for i in range(n_nodes):
        j = int(best[i])
        lc = float(flat[i, j])
        # XGBoost's SplitEntry starts at loss 0 and only accepts strict improvements
        if not lc > 0.0:
            out.append(None)
            continue
        f, c = divmod(j, n_cand)
        blk, local = blocks.locate(f)
        out.append(
            SplitInfo(
                gain=lc,
                block=blk,
                feature=local,
                global_feature=f,
                bin=int(cand_bin[c]),
                default_left=bool(cand_dl[c]),
                left_sum=left[i, f, c].copy(),
                right_sum=right[i, f, c].copy(),
            )
        )
    return out


def find_best_split(
    hist: FloatArray,
    node_sum: FloatArray,
    params: SplitParams,
    *,
    blocks: FeatureBlocks | None = None,
    feature_mask: NDArray[np.bool_] | None = None,
) -> SplitInfo | None:
    """:func:`evaluate_splits` for a single node histogram of shape (F, slots, 2K)."""
    h = np.asarray(hist, dtype=np.float64)
    return evaluate_splits(
        h[None], np.asarray(node_sum)[None], params, blocks=blocks, feature_mask=feature_mask
    )[0]


def is_splittable(split: SplitInfo | None, params: SplitParams) -> bool:
    """XGBoost's expansion test (depth and leaf limits aside).

    The loss change must exceed ``1e-6`` and reach ``gamma`` (both compared in float32,
    as XGBoost stores them), and neither child may have an all-zero hessian.
    """
    if split is None:
        return False
    loss = np.float32(split.gain)
    if not loss > np.float32(RT_EPS):
        return False
    if loss < np.float32(params.gamma):
        return False
    k = split.left_sum.shape[0] // 2
    return not (np.all(split.left_sum[k:] == 0.0) or np.all(split.right_sum[k:] == 0.0))

