"""Per-feature quantile binning, the first step of histogram-based boosting.

Every party bins its own columns locally; only bin indices ever enter a histogram, and
the raw thresholds stay with the party that owns the feature.

Bin semantics (one feature, sorted inner edges ``e_0 < e_1 < … < e_{m-1}``)::

    bin(x) = #{ j : e_j < x }          in 0 .. m        (n_bins = m + 1)
    bin(NaN) = missing_bin = max_bin   (one code shared by every feature)

so that for every bin ``b`` in ``0 .. n_bins-1``::

    x <= threshold(b)  <=>  bin(x) <= b      with threshold(b) = e_b  (+inf for the last bin)

A split "bin <= b" learnt on bin indices therefore routes raw values identically when it is
applied as ``x <= threshold(b)``, for training data and for unseen values alike.

Edges are placed half-way between consecutive distinct training values, so every bin holds
at least one training value and a training value never sits on an edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hefl.errors import ConfigError, DataError

__all__ = ["QuantileBinner"]

_MAX_SUPPORTED_BIN = 65535  # the missing code (== max_bin) must fit in uint16


class QuantileBinner:
    """Quantile binning of numeric features, with a dedicated code for missing values.

    Parameters
    ----------
    max_bin : int, default=32
        Maximum number of bins per feature (missing values excluded). Also the code given
        to NaN by :meth:`transform`. Codes are ``uint8`` when ``max_bin <= 255`` and
        ``uint16`` otherwise.

    Attributes
    ----------
    bin_edges_ : list of ndarray
        Sorted inner edges of each feature; feature ``j`` has ``len(bin_edges_[j]) + 1``
        bins and value ``x`` goes to bin ``searchsorted(bin_edges_[j], x, side="left")``.
    n_bins_ : ndarray of shape (n_features,)
        Number of non-missing bins of each feature (at least 1).
    n_features_in_ : int
        Number of features seen by :meth:`fit`.

    Examples
    --------
    >>> b = QuantileBinner(max_bin=4).fit([[1.0], [2.0], [3.0], [np.nan]])
    >>> b.transform([[1.0], [2.7], [np.nan]]).ravel().tolist()
    [0, 2, 4]
    >>> b.threshold(0, 1)
    2.5
    """

    def __init__(self, max_bin: int = 32) -> None:
        self.max_bin = max_bin

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        mb = self.max_bin
        if isinstance(mb, bool) or not isinstance(mb, (int, np.integer)):
            raise ConfigError(f"max_bin must be an integer, got {mb!r}")
        if not 2 <= int(mb) <= _MAX_SUPPORTED_BIN:
            raise ConfigError(f"max_bin must be in [2, {_MAX_SUPPORTED_BIN}], got {mb}")

    @staticmethod
    def _as_2d_float(X: ArrayLike) -> NDArray[np.float64]:
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"features must be numeric: {exc}") from exc
        if arr.ndim != 2:
            raise DataError(f"features must be a 2-D array, got shape {arr.shape}")
        return arr

    @staticmethod
    def _edges_for(col: NDArray[np.float64], max_bin: int) -> NDArray[np.float64]:
        col = col[~np.isnan(col)]
        if col.size == 0:
            return np.empty(0, dtype=np.float64)
        uniq, counts = np.unique(col, return_counts=True)
        if uniq.size <= max_bin:
            # every distinct value gets its own bin
            k = np.arange(uniq.size - 1)
        else:
            # boundary after the first distinct value whose cumulative count reaches the
            # j-th quantile; heavy ties merge quantiles, so there may be fewer bins
            cdf = np.cumsum(counts)
            targets = col.size * np.arange(1, max_bin) / max_bin
            k = np.unique(np.searchsorted(cdf, targets, side="left"))
            k = k[k < uniq.size - 1]
        lo, hi = uniq[k], uniq[k + 1]
        mid = lo + (hi - lo) / 2.0
        # rounding can land the midpoint on `hi` for neighbouring floats; the edge must
        # satisfy lo <= edge < hi so that `lo` and `hi` fall into different bins
        bad = ~((mid >= lo) & (mid < hi))
        mid[bad] = lo[bad]
        return mid

    def fit(self, X: ArrayLike) -> QuantileBinner:
        """Learn the bin edges of every column of ``X`` (NaN ignored).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric features; NaN marks a missing value. Infinite values are rejected.

        Returns
        -------
        self : QuantileBinner
        """
        self._check_params()
        arr = self._as_2d_float(X)
        if np.isinf(arr).any():
            raise DataError("features contain +/-inf; use NaN for missing values")
        mb = int(self.max_bin)
        self.bin_edges_: list[NDArray[np.float64]] = [
            self._edges_for(arr[:, j], mb) for j in range(arr.shape[1])
        ]
        self.n_bins_: NDArray[np.int64] = np.array(
            [e.size + 1 for e in self.bin_edges_], dtype=np.int64
        )
        self.n_features_in_: int = arr.shape[1]
        return self

    # ---------------------------------------------------------------- properties
    def _check_fitted(self) -> None:
        if not hasattr(self, "bin_edges_"):
            raise ConfigError("QuantileBinner is not fitted yet; call fit() first")

    @property
    def missing_bin(self) -> int:
        """Code given to NaN by :meth:`transform` (equal to ``max_bin``)."""
        return int(self.max_bin)

    @property
    def n_bin_slots(self) -> int:
        """Histogram slots per feature: ``max_bin`` value bins plus the missing slot."""
        return int(self.max_bin) + 1

    @property
    def dtype(self) -> np.dtype[Any]:
        """Integer dtype of the codes returned by :meth:`transform`."""
        return np.dtype(np.uint8) if int(self.max_bin) <= 255 else np.dtype(np.uint16)

    # -------------------------------------------------------------- transforming
    def transform(self, X: ArrayLike) -> NDArray[np.integer[Any]]:
        """Map raw values to bin codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Same columns as in :meth:`fit`. NaN becomes :attr:`missing_bin`; values
            outside the training range go to the first or last bin.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features), dtype uint8 or uint16
        """
        self._check_fitted()
        arr = self._as_2d_float(X)
        if arr.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {arr.shape[1]} features but the binner was fitted on "
                f"{self.n_features_in_}"
            )
        out = np.empty(arr.shape, dtype=self.dtype)
        for j, edges in enumerate(self.bin_edges_):
            col = arr[:, j]
            codes = np.searchsorted(edges, col, side="left")
            codes[np.isnan(col)] = self.missing_bin
            out[:, j] = codes
        return out

    def fit_transform(self, X: ArrayLike) -> NDArray[np.integer[Any]]:
        """Equivalent to ``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def threshold(self, feature: int, bin: int) -> float:
        """Raw threshold of the split "bin <= ``bin``" on ``feature``.

        ``x <= threshold(feature, b)`` holds exactly when ``transform(x) <= b`` for any
        non-missing ``x``. ``b >= n_bins_[feature] - 1`` gives ``+inf`` (all non-missing
        values left) and ``b < 0`` gives ``-inf`` (none left).
        """
        self._check_fitted()
        edges = self.bin_edges_[feature]
        if bin < 0:
            return float("-inf")
        if bin >= edges.size:
            return float("inf")
        return float(edges[bin])

    def thresholds(self, features: ArrayLike, bins: ArrayLike) -> NDArray[np.float64]:
        """Element-wise :meth:`threshold` over matching arrays of features and bins."""
        f = np.asarray(features, dtype=np.int64).ravel()
        b = np.asarray(bins, dtype=np.int64).ravel()
        return np.array([self.threshold(int(i), int(j)) for i, j in zip(f, b)], dtype=float)

    # ------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description of the fitted binner (floats round-trip exactly)."""
        self._check_fitted()
        return {
            "kind": "QuantileBinner",
            "max_bin": int(self.max_bin),
            "bin_edges": [[float(v) for v in e] for e in self.bin_edges_],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileBinner:
        """Rebuild a binner written by :meth:`to_dict`."""
        if data.get("kind") != "QuantileBinner":
            raise DataError(f"not a QuantileBinner description (kind={data.get('kind')!r})")
        obj = cls(max_bin=int(data["max_bin"]))
        obj._check_params()
        edges = [np.asarray(e, dtype=np.float64).reshape(-1) for e in data["bin_edges"]]
        for j, e in enumerate(edges):
            if e.size >= obj.max_bin or (e.size > 1 and not np.all(np.diff(e) > 0)):
                raise DataError(f"bin edges of feature {j} are not strictly increasing "
                                f"or exceed max_bin={obj.max_bin}")
        obj.bin_edges_ = edges
        obj.n_bins_ = np.array([e.size + 1 for e in edges], dtype=np.int64)
        obj.n_features_in_ = len(edges)
        return obj
