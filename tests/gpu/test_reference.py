"""The NumPy model of the GPU kernels (hefl.gpu.reference) against gmpy2 / Python ints.

Runs on any CPU.  The model follows the CUDA code lane by lane, so these tests check the
limb-level algorithm (carry words, lookahead, windows, CRT constants) that the GPU runs.
"""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hefl.gpu import _consts as C
from hefl.gpu.reference import GroupModel, decrypt_model, encrypt_model, keygen_params

try:
    import gmpy2
except ImportError:  # pragma: no cover
    gmpy2 = None


def _powmod(b: int, e: int, m: int) -> int:
    return int(gmpy2.powmod(b, e, m)) if gmpy2 is not None else pow(b, e, m)


SHAPES = [(8, 1), (8, 2), (8, 4), (8, 8), (16, 4), (32, 8), (32, 32)]
_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _limb_patterned(nl: int) -> st.SearchStrategy[int]:
    """Integers of nl limbs whose limbs are 0, 1, all-ones or random: stresses carries."""
    limb = st.sampled_from([0, 1, 0xFFFFFFFF, 0x80000000]) | st.integers(0, 0xFFFFFFFF)
    return st.lists(limb, min_size=nl, max_size=nl).map(
        lambda ls: sum(v << (32 * i) for i, v in enumerate(ls))
    )


@st.composite
def _modulus_and_operands(draw, nl: int):
    r = 1 << (32 * nl)
    n = draw(_limb_patterned(nl) | st.integers(3, r - 1)) | 1
    if n < 3:
        n = r - 1
    edge_a = st.sampled_from([0, 1, n - 1, r - 1, r - 2])
    edge_b = st.sampled_from([0, 1, n - 1, n - 2])
    a = draw(edge_a | _limb_patterned(nl) | st.integers(0, r - 1))
    b = draw(edge_b | st.integers(0, n - 1) | _limb_patterned(nl).map(lambda v: v % n))
    return n, a % r, b % n


@pytest.mark.parametrize("nl,tpi", SHAPES)
@_SETTINGS
@given(data=st.data())
def test_montmul_matches_gmpy2(nl, tpi, data):
    n, a, b = data.draw(_modulus_and_operands(nl))
    g = GroupModel(nl, tpi)
    r = 1 << (32 * nl)
    got = g.to_ints(g.montmul(g.from_ints([a]), g.from_ints([b]), g.from_ints([n]), g.np0(n)))
    assert got[0] == a * b * pow(r, -1, n) % n


@pytest.mark.parametrize("nl,tpi", SHAPES)
@_SETTINGS
@given(data=st.data())
def test_mullo_add_sub_match_ints(nl, tpi, data):
    r = 1 << (32 * nl)
    a = data.draw(_limb_patterned(nl) | st.integers(0, r - 1))
    b = data.draw(_limb_patterned(nl) | st.integers(0, r - 1))
    g = GroupModel(nl, tpi)
    A, B = g.from_ints([a]), g.from_ints([b])
    assert g.to_ints(g.mullo(A, B))[0] == a * b % r
    s, top = g.add(A, B)
    assert g.to_ints(s)[0] + (int(top[0]) << (32 * nl)) == a + b
    d, bo = g.sub(A, B)
    assert g.to_ints(d)[0] == (a - b) % r and int(bo[0]) == int(a < b)


def test_montmul_batch_2048_bit_key_shape():
    """The production shape (n^2 of a 2048-bit key: 128 limbs, 8 lanes) on a small batch."""
    p = keygen_params(2048)
    n2 = p.nsquare
    r = 1 << 4096
    g = GroupModel(128, 8)
    a = [0, 1, n2 - 1, r - 1] + [secrets.randbelow(n2) for _ in range(4)]
    b = [n2 - 1, n2 - 1, n2 - 1, n2 - 1] + [secrets.randbelow(n2) for _ in range(4)]
    got = g.to_ints(g.montmul(g.from_ints(a), g.from_ints(b), g.from_ints([n2]), g.np0(n2)))
    rinv = pow(r, -1, n2)
    assert got == [x * y * rinv % n2 for x, y in zip(a, b)]


@pytest.mark.parametrize("nl,tpi,w", [(8, 4, 5), (16, 8, 3), (8, 1, 4)])
def test_pow_window_matches_powmod(nl, tpi, w):
    g = GroupModel(nl, tpi, pow_w=w)
    r = 1 << (32 * nl)
    n = secrets.randbits(32 * nl) | 1 | (1 << (32 * nl - 1))
    xs = [0, 1, n - 1] + [secrets.randbelow(n) for _ in range(5)]
    es = [0, 1, 2, (1 << 64) - 1] + [secrets.randbits(64) for _ in range(4)]
    e_rows = C.ints_to_u32(es, 2)
    one = g.from_ints([r % n])
    xm = g.from_ints([x * r % n for x in xs])
    out = g.pow(xm, e_rows, 64, one, g.from_ints([n]), g.np0(n))
    got = [v * pow(r, -1, n) % n for v in g.to_ints(out)]
    assert got == [_powmod(x, e, n) for x, e in zip(xs, es)]


def test_fixed_base_model_matches_powmod():
    params = keygen_params(128, alpha_bits=64)
    nl = C.limbs32(params.nsquare)
    nl = C.round_up(nl, 4)
    kc = C.n2_consts(params.n, nl)
    g = GroupModel(nl, 4)
    wbits, nwin = 4, 16
    table = C.fixed_base_table(params.hs, kc.n2, kc.r, wbits, nwin)
    # the device builds the table from these seeds (entries d = 2^k); they must agree
    seeds = C.fixed_base_seeds(params.hs, kc.n2, kc.r, wbits, nwin)
    assert all(table[w][1 << k] == seeds[w][k] for w in range(nwin) for k in range(wbits))
    t_arr = np.stack([g.from_ints(row) for row in table])  # (nwin, 16, tpi, lpt)
    alphas = [0, 1, (1 << 64) - 1] + [secrets.randbits(64) for _ in range(5)]
    out = g.fixed_base(C.ints_to_u32(alphas, 2), nwin, wbits, t_arr,
                       g.from_ints([kc.n2]), kc.np0)
    got = [kc.from_mont(v) for v in g.to_ints(out)]
    assert got == [_powmod(params.hs, a, kc.n2) for a in alphas]


def _oracle_decrypt(params, c: int) -> int:
    p, q, n = params.p, params.q, params.n
    lam = (p - 1) * (q - 1)
    mu = pow((_powmod(n + 1, lam, n * n) - 1) // n, -1, n)
    return (_powmod(c, lam, n * n) - 1) // n * mu % n


@pytest.mark.parametrize("bits,tpi", [(256, 4), (256, 8), (512, 8)])
def test_encrypt_decrypt_models(bits, tpi):
    params = keygen_params(bits)
    n, n2 = params.n, params.nsquare
    nl = C.round_up(C.limbs32(n2), tpi)
    kc = C.n2_consts(n, nl)
    g = GroupModel(nl, tpi)
    ms = [0, 1, n - 1, n // 2] + [secrets.randbelow(n) for _ in range(4)]
    obf = [_powmod(params.hs, secrets.randbits(params.alpha_bits), n2) for _ in ms]
    c = encrypt_model(g, kc, C.ints_to_u32(ms, nl // 2), C.ints_to_u32(obf, nl))
    cs = C.u32_to_ints(c)
    assert cs == [(1 + m * n) * r % n2 for m, r in zip(ms, obf)]

    nlh = C.round_up(max(C.limbs32(params.p**2), C.limbs32(params.q**2), C.limbs32(n)), tpi)
    cc = C.crt_consts(n, params.p, params.q, nlh)
    gh = GroupModel(nlh, tpi)
    edge = [1, n2 - 1, n + 1]
    rows = C.ints_to_u32(cs + edge, nl)
    got = C.u32_to_ints(decrypt_model(gh, cc, rows))
    assert got[: len(ms)] == ms
    assert got[len(ms) :] == [_oracle_decrypt(params, x) for x in edge]


def test_bucket_and_pack_semantics_on_model():
    """Histogram = product per (feature, bucket); pack = prod c_j^(2^(s j)) (Montgomery)."""
    params = keygen_params(256)
    n, n2 = params.n, params.nsquare
    nl = C.limbs32(n2)
    kc = C.n2_consts(n, nl)
    g = GroupModel(nl, 4)
    N_ = g.from_ints([n2])
    cs = [secrets.randbelow(n2) for _ in range(6)]
    ids = np.array([[0, -1], [1, 0], [0, 0], [-1, 1], [1, 1], [0, -1]], dtype=np.int32)
    for f in range(2):
        for b in range(2):
            acc = g.from_ints([kc.r % n2])
            for i in np.flatnonzero(ids[:, f] == b):
                acc = g.montmul(acc, g.from_ints([kc.to_mont(cs[i])]), N_, kc.np0)
            want = 1
            for i in np.flatnonzero(ids[:, f] == b):
                want = want * cs[i] % n2
            assert kc.from_mont(g.to_ints(acc)[0]) == want
    # shift-and-pack, Horner from the top slot, as k_shift_pack
    shift, slots = 8, 3
    acc = g.from_ints([kc.to_mont(cs[slots - 1])])
    for j in range(slots - 2, -1, -1):
        for _ in range(shift):
            acc = g.montmul(acc, acc, N_, kc.np0)
        acc = g.montmul(acc, g.from_ints([kc.to_mont(cs[j])]), N_, kc.np0)
    want = 1
    for j in range(slots):
        want = want * _powmod(cs[j], 1 << (shift * j), n2) % n2
    assert kc.from_mont(g.to_ints(acc)[0]) == want


def test_limb_conversions_roundtrip():
    from hefl.he._backend import ints_to_limbs

    vals = [0, 1, (1 << 4096) - 1, secrets.randbits(4000)]
    u64 = ints_to_limbs(vals, 64)
    u32 = u64.view("<u4")
    assert u32.shape == (4, 128)
    assert C.u32_to_ints(u32) == vals
    assert np.array_equal(C.ints_to_u32(vals, 128), u32)
