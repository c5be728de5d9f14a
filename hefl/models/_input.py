"""What a user hands to a scikit-learn façade's ``fit`` / ``predict``, checked so the error
names the column, the row and the value (a ``DataError``), not numpy's
``could not convert string to float``.

scikit-learn's own checks still run afterwards (``validate_data``); any ``ValueError`` they
raise comes out as a :class:`~hefl.errors.DataError` with scikit-learn's message (a
``DataError`` is a ``ValueError``, so the estimator contract holds).  ``TypeError`` s (a
dict inside ``X`` …) stay ``TypeError`` s, as scikit-learn requires.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from hefl.errors import DataError

__all__ = ["validated_fit", "validated_predict"]


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:39] + "…"


def _column(names: list | None, j: int) -> str:
    return f"{names[j]!r}" if names is not None else str(j)


def _rows(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask)
    return int(rows.size), int(rows[0])


def check_features(X: Any, *, allow_nan: bool) -> None:
    """Name the first feature column holding text, infinity (or NaN when not allowed)."""
    names = [str(c) for c in X.columns] if hasattr(X, "columns") and hasattr(X, "dtypes") else None
    if names is not None:
        cols = [X.iloc[:, j].to_numpy() for j in range(X.shape[1])]
    else:
        arr = np.asarray(X) if not hasattr(X, "toarray") else None  # sparse: scikit-learn's business
        if arr is None or arr.ndim != 2:
            return
        cols = [arr[:, j] for j in range(arr.shape[1])]
    for j, col in enumerate(cols):
        if col.dtype.kind in "biuf":
            values = col.astype(np.float64, copy=False)
        elif col.dtype.kind in "OUS":
            try:
                values = col.astype(np.float64)
            except TypeError:
                continue  # e.g. a dict: scikit-learn raises the TypeError it promises
            except ValueError:
                for i, v in enumerate(col):
                    try:
                        float(v)
                    except ValueError:
                        raise DataError(f"feature column {_column(names, j)} is not numeric: {_short(v)} at row {i}; "
                                        "encode it as numbers or leave it out") from None
                    except TypeError:
                        continue
                continue
        else:
            continue
        bad = np.isinf(values)
        if bad.any():
            n, i = _rows(bad)
            raise DataError(f"feature column {_column(names, j)} contains infinity in {n} row(s) (first at row {i})")
        if not allow_nan:
            bad = np.isnan(values)
            if bad.any():
                n, i = _rows(bad)
                raise DataError(f"feature column {_column(names, j)} contains NaN in {n} row(s) (first at row {i}); "
                                "this estimator needs every value")


def check_label(y: Any) -> None:
    """Name the rows where the label is missing (NaN / None) or infinite."""
    if y is None:
        return
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        return
    if arr.dtype.kind in "fc":
        for what, bad in (("NaN", np.isnan(arr)), ("infinity", np.isinf(arr))):
            if bad.any():
                n, i = _rows(bad)
                raise DataError(f"the label y contains {what} in {n} row(s) (first at row {i})")
    elif arr.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, float) and not np.isfinite(v)) for v in arr], dtype=bool)
        if bad.any():
            n, i = _rows(bad)
            raise DataError(f"the label y is missing (None or NaN) in {n} row(s) (first at row {i}: "
                            f"{_short(arr[i])})")


def validated_fit(est: Any, X: Any, y: Any, *, allow_nan: bool, classifier: bool,
                  **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``validate_data(est, X, y, dtype=float64, …)`` with errors that name what is wrong."""
    check_label(y)
    check_features(X, allow_nan=allow_nan)
    try:
        X, y = validate_data(est, X, y, dtype=np.float64, ensure_all_finite="allow-nan" if allow_nan else True,
                             **kwargs)
        if classifier:
            check_classification_targets(y)
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    return X, y


def validated_predict(est: Any, X: Any, *, allow_nan: bool) -> np.ndarray:
    """``validate_data(est, X, reset=False, dtype=float64)`` with errors that name what is wrong."""
    check_features(X, allow_nan=allow_nan)
    try:
        return validate_data(est, X, reset=False, dtype=np.float64,
                             ensure_all_finite="allow-nan" if allow_nan else True)
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from exc
