"""Turns user IDs into a list of distinct strings (and remembers where each came from)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from numbers import Integral
from typing import Any, Literal

import numpy as np
import pandas as pd

from hefl.errors import ConfigError, DataError

__all__ = ["prepare_ids"]

log = logging.getLogger("hefl.psi")


def _short(x: object, limit: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _to_strings(ids: Iterable[Any]) -> list[str]:
    if isinstance(ids, (str, bytes, bytearray)):
        raise DataError(
            f"ids must be a sequence of IDs, not a single {type(ids).__name__} ({_short(ids)})"
        )
    if isinstance(ids, (pd.DataFrame, dict, set, frozenset)) or getattr(ids, "ndim", 1) != 1:
        # a DataFrame iterates over its column labels, a set or dict has no order
        what = type(ids).__name__
        shape = getattr(ids, "shape", None)
        raise DataError(f"ids must be one-dimensional (one list, array or Series of IDs), not a {what}"
                        + (f" of shape {shape}" if shape is not None else "")
                        + (" (pick the ID column: frame['id'], not frame[['id']])"
                           if isinstance(ids, pd.DataFrame) else ""))
    if isinstance(ids, (pd.Series, pd.Index)):
        na = np.asarray(pd.isna(ids), dtype=bool)
        if na.any():  # pd.NA, NaN, NaT, None: before a nullable dtype turns them into floats
            i = int(np.flatnonzero(na)[0])
            v = ids.iloc[i] if isinstance(ids, pd.Series) else ids[i]
            raise DataError(f"missing ID ({_short(v)}) at position {i} ({int(na.sum())} missing in all)")
        values: Any = ids.to_numpy()
    else:
        values = ids
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise DataError(f"ids must be one-dimensional, got an array of shape {values.shape}")
        if values.dtype.kind in "iu":
            return [str(v) for v in values.tolist()]
        if values.dtype.kind == "U":
            return list(values.tolist())
        if values.dtype.kind != "O":
            raise DataError(
                f"IDs must be strings or integers, got an array of dtype {values.dtype} "
                "(floats and booleans are ambiguous as IDs; convert them explicitly)"
            )
        values = values.tolist()
    lst = list(values)
    if all(type(v) is str for v in lst):
        return lst
    out: list[str] = []
    for i, v in enumerate(lst):
        if isinstance(v, str):
            out.append(str(v))
        elif isinstance(v, Integral) and not isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        elif v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            raise DataError(f"missing ID ({_short(v)}) at position {i}")
        else:
            raise DataError(
                f"IDs must be strings or integers, got {type(v).__name__} {_short(v)} at position {i}"
            )
    return out


def prepare_ids(
    ids: Iterable[Any], duplicates: Literal["raise", "drop"] = "raise"
) -> tuple[list[str], np.ndarray]:
    """Validate and normalise IDs.

    Parameters
    ----------
    ids : iterable of str or int
        The party's IDs. Integers (Python or numpy) become their decimal string, so ``7``
        and ``"7"`` are the same ID; floats, booleans and missing values are refused.
    duplicates : {"raise", "drop"}
        ``"raise"`` (default): a repeated ID is a :class:`~hefl.errors.DataError`.
        ``"drop"``: keep the first occurrence and log how many were dropped.

    Returns
    -------
    ids : list of str
        Distinct IDs.
    positions : numpy.ndarray of int64
        ``positions[k]`` is where ``ids[k]`` stood in the input.
    """
    if duplicates not in ("raise", "drop"):
        raise ConfigError(f"duplicates must be 'raise' or 'drop', got {duplicates!r}")
    strings = _to_strings(ids)
    n = len(strings)
    if n == 0:
        return strings, np.zeros(0, dtype=np.int64)
    dup = pd.Index(strings, dtype=object).duplicated(keep="first")
    n_dup = int(dup.sum())
    if n_dup == 0:
        return strings, np.arange(n, dtype=np.int64)
    if duplicates == "raise":
        first = np.flatnonzero(dup)[:3]
        examples = ", ".join(f"{_short(strings[i])} (position {i})" for i in first)
        raise DataError(
            f"{n_dup} duplicate ID(s) among {n}, e.g. {examples}; "
            "pass duplicates='drop' to keep the first occurrence of each"
        )
    keep = np.flatnonzero(~dup).astype(np.int64)
    log.warning("psi: dropped %d duplicate ID(s) of %d (kept first occurrences)", n_dup, n)
    return [strings[i] for i in keep.tolist()], keep
