"""Gradient histograms per (feature, bin), the quantity the parties exchange.

Layout shared by the whole core (and by the federated protocol once decrypted)::

    gh    : (n_samples, 2*K)                 columns [g_0 … g_{K-1} | h_0 … h_{K-1}]
    hist  : (n_features, n_bin_slots, 2*K)   hist[f, b] = sum of gh over the node's rows
                                             with bins[row, f] == b
    slots : 0 … n_bin_slots-2 are value bins, slot n_bin_slots-1 holds the missing values

``n_bin_slots = max_bin + 1`` and the missing code of :class:`QuantileBinner` is
``max_bin``, so a binned matrix indexes its histogram directly.

Sums run in sample order (``np.bincount``), so the same rows give bit-identical sums;
rows of a node are therefore always kept sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hefl.errors import DataError

__all__ = ["build_histogram", "build_histograms", "node_sum", "paired_bucket_sum", "subtract_histogram"]


def _flat_index(bins: NDArray[np.integer[Any]], n_bin_slots: int) -> NDArray[np.intp]:
    n_features = bins.shape[1]
    offsets = np.arange(n_features, dtype=np.intp) * n_bin_slots
    return (bins.astype(np.intp, copy=False) + offsets).ravel()


def build_histogram(
    bins: NDArray[np.integer[Any]],
    gh: NDArray[np.float64],
    n_bin_slots: int,
    rows: NDArray[np.integer[Any]] | None = None,
) -> NDArray[np.float64]:
    """Histogram of ``gh`` over ``rows`` for every feature of ``bins``.

    Parameters
    ----------
    bins : ndarray of shape (n_samples, n_features), integer
        Bin codes in ``[0, n_bin_slots)``, the last slot meaning "missing".
    gh : ndarray of shape (n_samples, n_channels)
        Per-sample statistics, normally ``[g | h]`` (``n_channels = 2*K``).
    n_bin_slots : int
        Slots per feature (``max_bin + 1``).
    rows : ndarray of int, optional
        Rows of the node (sorted); all rows when omitted.

    Returns
    -------
    hist : ndarray of shape (n_features, n_bin_slots, n_channels), float64
    """
    if bins.ndim != 2 or gh.ndim != 2 or bins.shape[0] != gh.shape[0]:
        raise DataError(
            f"bins {bins.shape} and gh {gh.shape} must be 2-D with the same number of rows"
        )
    n_features = bins.shape[1]
    n_channels = gh.shape[1]
    size = n_features * n_bin_slots
    if rows is not None:
        bins = bins[rows]
        gh = gh[rows]
    out = np.empty((n_channels, size), dtype=np.float64)
    if bins.shape[0] == 0 or n_features == 0:
        out.fill(0.0)
        return out.T.reshape(n_features, n_bin_slots, n_channels)
    flat = _flat_index(bins, n_bin_slots)
    # bincount is the fastest vectorised scatter-add numpy has; one pass per channel
    for c in range(n_channels):
        weights = np.repeat(np.ascontiguousarray(gh[:, c], dtype=np.float64), n_features)
        out[c] = np.bincount(flat, weights=weights, minlength=size)
    return np.ascontiguousarray(out.T).reshape(n_features, n_bin_slots, n_channels)


def build_histograms(
    bins: NDArray[np.integer[Any]],
    gh: NDArray[np.float64],
    n_bin_slots: int,
    row_sets: Sequence[NDArray[np.integer[Any]]],
) -> NDArray[np.float64]:
    """:func:`build_histogram` for several nodes at once.

    Returns
    -------
    hists : ndarray of shape (len(row_sets), n_features, n_bin_slots, n_channels)
    """
    shape = (len(row_sets), bins.shape[1], n_bin_slots, gh.shape[1])
    out = np.empty(shape, dtype=np.float64)
    for i, rows in enumerate(row_sets):
        out[i] = build_histogram(bins, gh, n_bin_slots, rows)
    return out


def subtract_histogram(
    parent: NDArray[np.float64], child: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Histogram of the sibling: ``parent - child`` (same shape).

    Building only the smaller child and deriving the other halves the histogram work,
    and in the federated protocol halves the encrypted traffic.
    """
    if parent.shape != child.shape:
        raise DataError(f"histogram shapes differ: {parent.shape} vs {child.shape}")
    return parent - child


def node_sum(gh: NDArray[np.float64], rows: NDArray[np.integer[Any]] | None = None
             ) -> NDArray[np.float64]:
    """Total ``[G | H]`` of a node, shape (n_channels,)."""
    sel = gh if rows is None else gh[rows]
    return sel.sum(axis=0, dtype=np.float64) if sel.shape[0] else np.zeros(gh.shape[1])


def paired_bucket_sum(kit: Any, enc: Any, ids: NDArray[np.integer[Any]], n_nodes: int, n_slots: int) -> Any:
    """``kit.bucket_sum(enc, ids, n_nodes * n_slots)``, the same ciphertexts, with about half the work.

    ``ids[i, f] = node · n_slots + bin`` (every row in one node; no ``-1``).  The direct
    sum costs one modular multiplication per row and feature.  Here features go in pairs
    ``(f, f')``: one bucket per *(node, bin_f, bin_f')* costs one multiplication per row
    and pair, and each of the two histograms is then the product of the non-empty joint
    buckets of its bin, ``K`` multiplications for ``K`` non-empty joint buckets.  Products
    mod n (n²) do not depend on the order of the factors, so every cell is bit-identical
    to the direct sum; the encrypted histogram of a large node costs about ``rows + 2K``
    instead of ``2 · rows`` multiplications per pair (``K ≤ min(rows, n_nodes · n_slots²)``).
    The pairing is used only where this cost model says it pays, and only on the CPU
    (the GPU kernel's partial histograms grow with the bucket count; it is fast anyway).
    """
    rows, n_feat = ids.shape
    backend = getattr(kit, "backend", None)
    if backend is not None and getattr(backend, "name", "cpu") != "cpu":
        return kit.bucket_sum(enc, ids, n_nodes * n_slots)
    n_buckets = n_nodes * n_slots
    pairs = n_feat // 2
    cells = n_nodes * n_slots * n_slots
    if pairs == 0 or rows == 0 or cells > 1 << 16 or int(ids.min()) < 0:
        return kit.bucket_sum(enc, ids, n_buckets)
    ids = ids.astype(np.int64, copy=False)
    node = ids[:, 0] // n_slots
    b = ids - (node * n_slots)[:, None]
    joint = (node * (n_slots * n_slots))[:, None] + b[:, 0:2 * pairs:2] * n_slots + b[:, 1:2 * pairs:2]
    counts = np.stack([np.bincount(joint[:, j], minlength=cells) for j in range(pairs)])
    nonempty = counts > 0
    k = int(nonempty.sum())
    jobs = int(getattr(getattr(kit, "backend", None), "n_jobs", 1) or 1)
    # modular multiplications: direct 2·rows per pair; paired rows + 2K per pair (+ merging
    # the dense joint partial histograms of the threads)
    if rows * pairs + 2 * k + (jobs - 1) * cells * pairs >= 0.9 * (2 * rows * pairs):
        return kit.bucket_sum(enc, ids, n_buckets)
    joint_hist = kit.bucket_sum(enc, joint.astype(np.int32), cells).reshape(-1)  # (pairs · cells,)
    sel_p, sel_c = np.nonzero(nonempty)
    cells_ct = joint_hist[sel_p * cells + sel_c]
    nd, b1, b2 = sel_c // (n_slots * n_slots), (sel_c // n_slots) % n_slots, sel_c % n_slots
    base = sel_p * n_buckets + nd * n_slots
    ids2 = np.stack([base + b1, base + b2], axis=1).astype(np.int32)
    marg = kit.bucket_sum(cells_ct, ids2, pairs * n_buckets).reshape(2, pairs, n_buckets)
    # interleave back to feature order: f = 2j from marg[0, j], f = 2j + 1 from marg[1, j]
    from hefl.he import concatenate

    per_feature = []
    for j in range(pairs):
        per_feature += [marg[0, j].reshape(1, n_buckets), marg[1, j].reshape(1, n_buckets)]
    if n_feat % 2:
        per_feature.append(kit.bucket_sum(enc, ids[:, -1:].astype(np.int32), n_buckets))
    return concatenate(per_feature, axis=0)
