"""ID normalisation: strings, integers, refusals, duplicates."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hefl.errors import ConfigError, DataError
from hefl.psi._ids import prepare_ids


def test_strings_pass_through() -> None:
    ids, pos = prepare_ids(["b", "a", "\u00e9", "x" * 1000])
    assert ids == ["b", "a", "\u00e9", "x" * 1000] and pos.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "given",
    [
        [1, 22, 333],
        np.array([1, 22, 333], dtype=np.int64),
        np.array([1, 22, 333], dtype=np.uint16),
        pd.Series([1, 22, 333]),
        pd.Index([1, 22, 333]),
        [np.int32(1), "22", 333],
        range(1, 4),
    ],
)
def test_integers_become_decimal_strings(given: object) -> None:
    ids, _ = prepare_ids(given)  # type: ignore[arg-type]
    expected = ["1", "22", "333"] if not isinstance(given, range) else ["1", "2", "3"]
    assert ids == expected and all(type(x) is str for x in ids)


def test_numpy_unicode_and_object_arrays() -> None:
    assert prepare_ids(np.array(["a", "b"]))[0] == ["a", "b"]
    assert prepare_ids(np.array(["a", 7], dtype=object))[0] == ["a", "7"]


@pytest.mark.parametrize(
    "given, match",
    [
        ([1.5], "float"),
        ([True], "bool"),
        (["a", None], "missing ID"),
        (["a", float("nan")], "missing ID"),
        (np.array([1.0, 2.0]), "float64"),
        (np.array([True]), "bool"),
        ("abc", "single str"),
        (b"abc", "single bytes"),
        ([b"raw"], "bytes"),
        (np.zeros((2, 2), dtype=np.int64), "one-dimensional"),
        # a DataFrame iterates over its column labels: never taken for IDs
        (pd.DataFrame({"cid": ["u1", "u2"]}), r"not a DataFrame of shape \(2, 1\) \(pick the ID column"),
        ({"u1", "u2"}, "not a set"),
        # missing values of pandas' nullable dtypes are named as missing
        (pd.Series([1, None, 3], dtype="Int64"), r"missing ID \(<NA>\) at position 1 \(1 missing"),
        (pd.Series(["a", None], dtype="string"), "missing ID .* at position 1"),
        (pd.Index(["a", None]), "missing ID .* at position 1"),
    ],
)
def test_refused(given: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        prepare_ids(given)  # type: ignore[arg-type]


def test_duplicates_raise_by_default_with_a_count() -> None:
    with pytest.raises(DataError, match=r"2 duplicate ID\(s\) among 5.*'a' \(position 2\)"):
        prepare_ids(["a", "b", "a", "c", "b"])
    with pytest.raises(DataError, match="duplicate"):
        prepare_ids([7, "7"])  # the same ID once converted


def test_duplicates_drop_keeps_first_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hefl.psi"):
        ids, pos = prepare_ids(["a", "b", "a", "c", "b"], duplicates="drop")
    assert ids == ["a", "b", "c"] and pos.tolist() == [0, 1, 3]
    assert "dropped 2 duplicate" in caplog.text


def test_empty_and_bad_option() -> None:
    ids, pos = prepare_ids([])
    assert ids == [] and pos.dtype == np.int64 and pos.size == 0
    with pytest.raises(ConfigError):
        prepare_ids(["a"], duplicates="keep")  # type: ignore[arg-type]
