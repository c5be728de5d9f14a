import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import DataError
from hefl.models.secureboost._histogram import (
    build_histogram,
    build_histograms,
    node_sum,
    paired_bucket_sum,
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


@pytest.fixture(scope="module")
def small_kits():
    from hefl.he import mock, ou, paillier

    return [mock.keygen(), paillier.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=2),
            ou.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=2)]


@pytest.mark.parametrize("rows, n_feat, n_nodes, n_slots", [
    (3000, 5, 2, 8),    # odd feature count: the last one is summed directly
    (2000, 4, 1, 33),   # one large node: the paired sum pays
    (300, 6, 4, 33),    # many joint cells, few rows: the cost model falls back
    (40, 1, 3, 4),      # one feature: nothing to pair
])
def test_paired_bucket_sum_gives_the_same_ciphertexts(small_kits, rows, n_feat, n_nodes, n_slots):
    rng = np.random.default_rng(rows)
    node = np.sort(rng.integers(0, n_nodes, rows))
    ids = (rng.integers(0, n_slots, size=(rows, n_feat)) + node[:, None] * n_slots).astype(np.int32)
    skew = rng.random(ids.shape) < 0.3  # skewed bins: bin 0 of its node far fuller than the others
    ids[skew] = (node[:, None] * n_slots + np.zeros_like(ids))[skew]
    for kit in small_kits:
        enc = kit.encrypt(rng.normal(size=rows))
        direct = kit.bucket_sum(enc, ids, n_nodes * n_slots)
        paired = paired_bucket_sum(kit, enc, ids, n_nodes, n_slots)
        assert paired.shape == direct.shape == (n_feat, n_nodes * n_slots)
        assert paired.raw() == direct.raw(), kit.scheme  # bit-identical, not just equal plaintexts


def test_paired_bucket_sum_pays_on_large_nodes(small_kits, monkeypatch):
    """The pairing is taken where the cost model says so: count the multiplications asked for."""
    kit = small_kits[1]
    calls = []
    orig = type(kit).bucket_sum
    monkeypatch.setattr(type(kit), "bucket_sum", lambda self, ca, ids, nb: calls.append(np.shape(ids)) or
                        orig(self, ca, ids, nb))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 8, size=(4000, 4)).astype(np.int32)
    paired_bucket_sum(kit, kit.encrypt(np.ones(4000)), ids, 1, 8)
    assert calls[0] == (4000, 2)  # one joint bucket per row and pair, then the marginals of <= 64 cells
    assert calls[1][1] == 2 and calls[1][0] <= 2 * 64
