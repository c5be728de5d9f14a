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

__all__ = ["build_histogram", "build_histograms", "node_sum", "subtract_histogram"]


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
