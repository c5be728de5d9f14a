import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import DataError
from hefl.models.secureboost._histogram import (
    build_histogram,
    build_histograms,
    node_sum,
    subtract_histogram,
)


def _naive(bins, gh, slots, rows):
    out = np.zeros((bins.shape[1], slots, gh.shape[1]))
    for r in rows:
        for f in range(bins.shape[1]):
            out[f, bins[r, f]] += gh[r]
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), d=st.integers(1, 5), k=st.integers(1, 3), seed=st.integers(0, 99))
def test_matches_naive_loop(n, d, k, seed):
    rng = np.random.default_rng(seed)
    slots = 9
    bins = rng.integers(0, slots, size=(n, d)).astype(np.uint8)
    gh = rng.normal(size=(n, 2 * k))
    rows = np.flatnonzero(rng.random(n) < 0.6)
    hist = build_histogram(bins, gh, slots, rows)
    assert hist.shape == (d, slots, 2 * k)
    np.testing.assert_allclose(hist, _naive(bins, gh, slots, rows), atol=1e-12)
    # every feature's histogram sums to the node total
    np.testing.assert_allclose(hist.sum(axis=1), np.tile(node_sum(gh, rows), (d, 1)), atol=1e-9)


def test_subtraction_gives_the_sibling_exactly_where_bins_are_empty():
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 17, size=(500, 6)).astype(np.uint8)
    gh = rng.normal(size=(500, 2))
    parent = np.arange(500)
    left = np.flatnonzero(bins[:, 0] <= 7)
    right = np.flatnonzero(bins[:, 0] > 7)
    hp = build_histogram(bins, gh, 17, parent)
    hl = build_histogram(bins, gh, 17, left)
    hr = build_histogram(bins, gh, 17, right)
    sib = subtract_histogram(hp, hl)
    np.testing.assert_allclose(sib, hr, atol=1e-12)
    # bins the sibling does not touch come out as exact zeros (same summation order)
    assert np.all(sib[0, :8] == 0.0)


def test_batch_and_errors():
    bins = np.array([[0, 1], [1, 1], [2, 0]], dtype=np.uint8)
    gh = np.array([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    hs = build_histograms(bins, gh, 3, [np.array([0, 1]), np.array([], dtype=int)])
    assert hs.shape == (2, 2, 3, 2)
    assert hs[0, 0, :, 0].tolist() == [1.0, 2.0, 0.0]
    assert np.all(hs[1] == 0)
    with pytest.raises(DataError):
        build_histogram(bins, gh[:2], 3)
    with pytest.raises(DataError):
        subtract_histogram(hs[0], hs[0, :1])
