"""Reading one party's table: IDs as written, numeric features, the label (active party only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hefl.errors import DataError

from .config import data_format

__all__ = ["PartyTable", "ragged_rows", "read_table"]

_BLOCK = 1 << 24  # bytes per read while counting fields


@dataclass
class PartyTable:
    """A party's rows: IDs (strings), feature matrix, feature names, label (or ``None``)."""

    ids: np.ndarray            # object array of str
    X: np.ndarray              # float64 (n_rows, n_features), NaN = missing
    columns: list[str]
    y: pd.Series | None
    path: Path

    def take(self, rows: np.ndarray) -> PartyTable:
        rows = np.asarray(rows, dtype=np.int64)
        return PartyTable(self.ids[rows], self.X[rows], self.columns,
                          None if self.y is None else self.y.iloc[rows].reset_index(drop=True), self.path)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def ragged_rows(path: Path, sep: str) -> str | None:
    """Say which data rows of a CSV file have more or fewer fields than its header, if any.

    pandas pads a row with too few fields with missing values (and a file whose every
    row has one field too many silently gets its first column as the index), so a
    truncated or misaligned file would otherwise train as if its cells were missing.
    Blank lines are skipped and rows are numbered as pandas numbers them. Files with
    quotes are counted with :mod:`csv`; a separator longer than one character (a regular
    expression to pandas) is not checked.
    """
    if len(sep) != 1:
        return None
    widths = _widths(path, sep)
    expected, bad, first, first_n = None, 0, 0, 0
    row = 0
    for block in widths:
        if expected is None:
            if block.size == 0:
                continue
            expected, block = int(block[0]), block[1:]
        off = np.flatnonzero(block != expected)
        if off.size and not bad:
            first, first_n = row + int(off[0]) + 1, int(block[off[0]])
        bad += int(off.size)
        row += int(block.size)
    if not bad:
        return None
    return (f"{path.name}: data row {first} has {first_n} field(s) where the header has {expected}"
            f" ({bad} such row(s) in all; a truncated or misaligned file?)")


def _widths(path: Path, sep: str):
    """Fields per non-blank line (header first), block by block: counted on an mmap of
    the file, or by :mod:`csv` where the file has quotes (or the separator is not one byte)."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm.find(b'"') >= 0 or len(sep.encode()) != 1:  # quotes, or a multi-byte sep
                yield from _csv_widths(path, sep)
                return
            code = sep.encode()[0]
            whole = np.frombuffer(mm, dtype=np.uint8)
            try:
                pos = 0
                while pos < size:
                    end = min(pos + _BLOCK, size)
                    if end < size:  # stop after a newline: no line is split between blocks
                        cut = mm.rfind(b"\n", pos, end)
                        if cut < 0:
                            cut = mm.find(b"\n", end)
                        end = size if cut < 0 else cut + 1
                    yield _line_widths(whole[pos:end], code)
                    pos = end
            finally:
                del whole  # the mmap cannot close while a view of it lives


def _line_widths(buf: np.ndarray, code: int) -> np.ndarray:
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [buf.size]))
    lens = ends - starts
    cr = lens > 0
    cr[cr] = buf[ends[cr] - 1] == 13
    starts = starts[(lens - cr) > 0]
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    # a line's separators: those up to the next non-blank line's start (blank lines hold none)
    seps = np.flatnonzero(buf == code)
    return np.diff(np.searchsorted(seps, starts), append=seps.size) + 1


def _csv_widths(path: Path, sep: str):
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        widths: list[int] = []
        for rec in csv.reader(fh, delimiter=sep):
            if rec:
                widths.append(len(rec))
                if len(widths) >= 1 << 16:
                    yield np.asarray(widths, dtype=np.int64)
                    widths = []
        yield np.asarray(widths, dtype=np.int64)


def read_table(path: Path, fmt: str, sep: str, id_column: str, label_column: str | None,
               columns: list[str] | None) -> PartyTable:
    """Read a CSV or Parquet file.

    The ID column is kept exactly as written (text: leading zeros, ``NA`` … are IDs too);
    features must be numeric (empty cells are missing values); the label must be present
    in every row.

    Raises
    ------
    DataError
        Repeated IDs are left to PSI; here: missing columns, empty IDs, non-numeric or
        infinite features, missing or infinite labels, no rows.
    """
    kind = data_format(path, fmt)
    ragged = None
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=sep, dtype={id_column: str})
            ragged = ragged_rows(path, sep)
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if ragged is not None:
        raise DataError(ragged)
    # the file may have changed since the job was checked: name what is missing, not a KeyError
    have = [str(c) for c in frame.columns]
    wanted = [id_column] + ([label_column] if label_column is not None else []) + list(columns or [])
    missing = [c for c in dict.fromkeys(wanted) if c not in have]
    if missing:
        more = f", … ({len(have)} in all)" if len(have) > 12 else ""
        raise DataError(f"{path.name}: no column(s) {missing[:10]} (columns: {', '.join(have[:12])}{more})")
    try:
        if kind == "parquet":
            raw_ids = frame[id_column].astype(str)
            if frame[id_column].isna().any():
                raise DataError(f"{path.name}: missing ID in column {id_column!r}")
        else:
            raw_ids = pd.read_csv(path, sep=sep, usecols=[id_column], dtype=str, keep_default_na=False,
                                  na_values=[])[id_column]
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if len(frame) == 0:
        raise DataError(f"{path.name} has no rows")
    empty = (raw_ids == "").to_numpy().nonzero()[0]
    if empty.size:
        raise DataError(f"{path.name}: empty ID in column {id_column!r} at data row {int(empty[0]) + 1} "
                        f"({empty.size} empty in all)")
    frame.columns = [str(c) for c in frame.columns]
    if columns is None:
        columns = [c for c in frame.columns if c not in (id_column, label_column)]
    if not columns:
        raise DataError(f"{path.name} has no feature columns besides {id_column!r}"
                        + (f" and {label_column!r}" if label_column else ""))
    feats = frame[columns]
    bad = [c for c in columns if not (pd.api.types.is_numeric_dtype(feats[c]) or pd.api.types.is_bool_dtype(feats[c]))]
    if bad:
        examples = []
        for c in bad[:3]:  # the first value that is not a number (not merely the first value)
            wrong = (feats[c].notna() & pd.to_numeric(feats[c], errors="coerce").isna()).to_numpy().nonzero()[0]
            if wrong.size:
                examples.append(f"{c!r}: {str(feats[c].iloc[wrong[0]])[:40]!r} at data row {int(wrong[0]) + 1}")
        raise DataError(f"{path.name}: feature column(s) {bad[:10]} are not numeric (e.g. {'; '.join(examples)}); "
                        "encode them as numbers or leave them out with data.columns")
    X = feats.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(X).any():
        c = columns[int(np.argwhere(np.isinf(X))[0][1])]
        raise DataError(f"{path.name}: infinite value in feature column {c!r}")
    y = None
    if label_column is not None:
        y = frame[label_column].reset_index(drop=True)
        if y.isna().any():
            raise DataError(f"{path.name}: the label {label_column!r} is missing in {int(y.isna().sum())} row(s)")
        if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            inf = np.isinf(y.to_numpy(dtype=np.float64)).nonzero()[0]
            if inf.size:
                raise DataError(f"{path.name}: the label {label_column!r} is infinite in {inf.size} row(s) "
                                f"(first at data row {int(inf[0]) + 1})")
    return PartyTable(np.asarray(raw_ids.to_numpy(), dtype=object), X, list(columns), y, path)
