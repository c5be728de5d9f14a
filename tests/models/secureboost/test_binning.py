import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost._binning import QuantileBinner


def test_small_column_gets_one_bin_per_value_and_nan_code():
    b = QuantileBinner(max_bin=8).fit([[3.0], [1.0], [2.0], [2.0], [np.nan]])
    assert b.n_bins_.tolist() == [3]
    codes = b.transform([[1.0], [2.0], [3.0], [np.nan], [-5.0], [9.0]]).ravel()
    assert codes.tolist() == [0, 1, 2, 8, 0, 2]
    assert b.missing_bin == 8 and b.n_bin_slots == 9


def test_quantile_bins_are_balanced_and_non_empty():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3200, 3))
    X[:, 2] = np.round(X[:, 2], 1)  # heavy ties
    b = QuantileBinner(max_bin=32).fit(X)
    codes = b.transform(X)
    for j in range(3):
        counts = np.bincount(codes[:, j], minlength=b.n_bins_[j])
        assert counts.size == b.n_bins_[j] <= 32
        assert counts.min() > 0  # every bin holds training data
    assert b.n_bins_[0] == 32
    assert np.bincount(codes[:, 0]).max() <= 2 * 3200 / 32


def test_dtype_follows_max_bin():
    X = np.arange(1000, dtype=float).reshape(-1, 1)
    assert QuantileBinner(255).fit_transform(X).dtype == np.uint8
    codes = QuantileBinner(300).fit_transform(np.vstack([X, [[np.nan]]]))
    assert codes.dtype == np.uint16 and codes[-1, 0] == 300


def test_degenerate_columns():
    X = np.array([[1.0, np.nan], [1.0, np.nan], [1.0, np.nan]])
    b = QuantileBinner(4).fit(X)
    assert b.n_bins_.tolist() == [1, 1]
    assert b.transform(X).tolist() == [[0, 4]] * 3
    assert b.threshold(0, 0) == np.inf and b.threshold(0, -1) == -np.inf


@settings(max_examples=60, deadline=None)
@given(
    train=arrays(np.float64, st.integers(1, 80),
                 elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan))),
    test=arrays(np.float64, st.integers(1, 40), elements=st.floats(-2e6, 2e6)),
    max_bin=st.integers(2, 16),
)
def test_threshold_routes_raw_values_like_bins(train, test, max_bin):
    b = QuantileBinner(max_bin).fit(train.reshape(-1, 1))
    codes = b.transform(test.reshape(-1, 1)).ravel().astype(int)
    for bin_ in range(-1, int(b.n_bins_[0])):
        thr = b.threshold(0, bin_)
        assert np.array_equal(test <= thr, codes <= bin_)
    # training values never straddle an edge: equal values share a bin, order is kept
    tr = train[~np.isnan(train)]
    if tr.size:
        c = b.transform(tr.reshape(-1, 1)).ravel()
        order = np.argsort(tr, kind="stable")
        assert np.all(np.diff(c[order].astype(int)) >= 0)


def test_json_round_trip_is_exact():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4)) * [1, 1e-9, 1e9, 3]
    b = QuantileBinner(16).fit(X)
    b2 = QuantileBinner.from_dict(json.loads(json.dumps(b.to_dict())))
    assert np.array_equal(b.transform(X), b2.transform(X))
    for e1, e2 in zip(b.bin_edges_, b2.bin_edges_):
        assert np.array_equal(e1, e2)


def test_errors():
    with pytest.raises(ConfigError, match="max_bin"):
        QuantileBinner(1).fit([[1.0]])
    with pytest.raises(ConfigError, match="not fitted"):
        QuantileBinner().transform([[1.0]])
    with pytest.raises(DataError, match="inf"):
        QuantileBinner().fit([[np.inf]])
    b = QuantileBinner().fit([[1.0, 2.0]])
    with pytest.raises(DataError, match="fitted on 2"):
        b.transform([[1.0]])
    with pytest.raises(DataError, match="kind"):
        QuantileBinner.from_dict({"kind": "Tree"})
