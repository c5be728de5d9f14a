"""Counting fields per CSV row (``ragged_rows``) against the csv module, block edges included."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from hefl.jobs import _data
from hefl.jobs._data import ragged_rows


def _reference(text: str, sep: str) -> tuple[int, int, int, int] | None:
    """(first bad data row, its fields, header fields, bad rows) by the csv module."""
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep) if r]
    if not rows:
        return None
    want = len(rows[0])
    bad = [(i, len(r)) for i, r in enumerate(rows[1:], 1) if len(r) != want]
    return (bad[0][0], bad[0][1], want, len(bad)) if bad else None


def _said(msg: str | None) -> tuple[int, int, int, int] | None:
    if msg is None:
        return None
    import re

    m = re.search(r"data row (\d+) has (\d+) field\(s\) where the header has (\d+) \((\d+) such", msg)
    assert m, msg
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


def _random_csv(rng: np.random.Generator, sep: str, quotes: bool) -> str:
    n_cols = int(rng.integers(1, 6))
    eol = "\r\n" if rng.random() < 0.3 else "\n"
    lines = [sep.join(f"c{j}" for j in range(n_cols))]
    for _ in range(int(rng.integers(0, 60))):
        r = rng.random()
        if r < 0.08:
            lines.append("")  # a blank line: skipped
            continue
        width = n_cols if r > 0.2 else int(rng.integers(1, n_cols + 3))
        cells = [str(int(rng.integers(0, 999))) if rng.random() > 0.1 else "" for _ in range(width)]
        if quotes and cells and rng.random() < 0.3:
            cells[0] = f'"{cells[0]}{sep}x"'  # a quoted separator is not a field break
        lines.append(sep.join(cells))
    text = eol.join(lines)
    return text + (eol if rng.random() < 0.7 else "")


@pytest.mark.parametrize("quotes", [False, True], ids=["plain", "quoted"])
def test_field_counts_match_the_csv_module_across_block_edges(tmp_path, monkeypatch, quotes):
    rng = np.random.default_rng(7 + quotes)
    path = tmp_path / "t.csv"
    for trial in range(150):
        monkeypatch.setattr(_data, "_BLOCK", int(rng.integers(1, 40)))  # lines split across reads
        sep = [",", ";", "\t"][trial % 3]
        text = _random_csv(rng, sep, quotes)
        path.write_bytes(text.encode())
        assert _said(ragged_rows(path, sep)) == _reference(text, sep), text


def test_well_formed_files_pass(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("id,a,b\r\n1,,3\r\n\r\n4,5,\r\n")
    assert ragged_rows(path, ",") is None
    path.write_text("")
    assert ragged_rows(path, ",") is None
    path.write_text("id,a\n1,2\n3")  # one field short, no final newline
    assert _said(ragged_rows(path, ",")) == (2, 1, 2, 1)


def test_every_row_one_field_too_many_is_caught(tmp_path):
    """pandas would silently take the first column as the index."""
    path = tmp_path / "shifted.csv"
    path.write_text("id,a,b\n0,1,2,3\n0,4,5,6\n")
    assert _said(ragged_rows(path, ",")) == (1, 4, 3, 2)


def test_regex_separator_is_not_checked(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("id::a\n1::2::3\n")
    assert ragged_rows(path, "::") is None
