"""GpuPaillierBackend on a real GPU, 2048-bit key: every op equals a Python-integer oracle.

Marked ``gpu``: skipped (by tests/conftest.py) where CuPy or a CUDA device is missing.
The oracle is computed here from Python ints (gmpy2 when installed), so these tests also
run on GPU machines without gmpy2 or the C extension.
"""

from __future__ import annotations

import secrets

import _checks
import numpy as np
import pytest

from hefl.errors import BackendUnavailableError
from hefl.he._backend import limbs_to_ints

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def key2048():
    from hefl.gpu.reference import keygen_params

    return keygen_params(2048)


@pytest.fixture(scope="module")
def backend(key2048):
    from hefl.gpu.backend import GpuPaillierBackend

    return GpuPaillierBackend(key2048)


@pytest.fixture(scope="module")
def oracle(key2048):
    return _checks.Oracle(key2048)


@pytest.mark.parametrize("check", _checks.ALL_CHECKS, ids=lambda f: f.__name__)
def test_op_matches_oracle(backend, oracle, check):
    check(backend, oracle)


def test_larger_batches_cross_blocks(backend, oracle):
    """Thousands of rows: many blocks, several histogram chunks, multi-pass reductions."""
    n2 = oracle.n2
    rows = 3000
    a, b = oracle.rand_c(rows), oracle.rand_c(rows)
    _checks._eq(backend.add(oracle.C(a), oracle.C(b)), [x * y % n2 for x, y in zip(a, b)],
                "add 3000")
    ids = np.random.default_rng(7).integers(-1, 17, size=(rows, 4), dtype=np.int32)
    got = backend.bucket_sum(oracle.C(a), ids, 17)
    want = []
    for f in range(4):
        for bk in range(17):
            acc = 1
            for i in np.flatnonzero(ids[:, f] == bk):
                acc = acc * a[i] % n2
            want.append(acc)
    _checks._eq(got.reshape(68, -1), want, "bucket_sum 3000x4x17")
    total = 1
    for v in a:
        total = total * v % n2
    assert limbs_to_ints(backend.sum(oracle.C(a))[None, :])[0] == total
    ms = [secrets.randbelow(oracle.n) for _ in range(2000)]
    c = backend.encrypt_fresh(oracle.M(ms))
    assert limbs_to_ints(backend.decrypt(c)) == ms


def test_fb_windows_agree(key2048, oracle):
    """Other fixed-base windows (table sizes) give valid obfuscators too."""
    from hefl.gpu.backend import GpuPaillierBackend

    for w in (8, 16):
        be = GpuPaillierBackend(key2048, fb_window=w)
        _checks.check_obfuscators(be, oracle, k=8)
        ms = [secrets.randbelow(oracle.n) for _ in range(64)]
        assert limbs_to_ints(be.decrypt(be.encrypt_fresh(oracle.M(ms)))) == ms


def test_same_results_as_cpu_backend(backend, key2048, oracle):
    cpu_mod = pytest.importorskip("hefl.he._cpu")
    cpu = cpu_mod.CpuPaillierBackend(key2048, n_jobs=2)
    a = oracle.C(oracle.rand_c(64))
    b = oracle.C(oracle.rand_c(64))
    k = oracle.M([secrets.randbelow(oracle.n) for _ in range(64)])
    assert np.array_equal(backend.add(a, b), cpu.add(a, b))
    assert np.array_equal(backend.mul_scalar(a, k), cpu.mul_scalar(a, k))
    ids = np.random.default_rng(0).integers(-1, 5, size=(64, 3), dtype=np.int32)
    assert np.array_equal(backend.bucket_sum(a, ids, 5), cpu.bucket_sum(a, ids, 5))
    c = cpu.encrypt(k, cpu.obfuscators(64))
    assert np.array_equal(backend.decrypt(c), cpu.decrypt(c))
    assert np.array_equal(backend.encrypt(k, backend.obfuscators(64)).shape, c.shape)


def test_kit_with_gpu_backend():
    pytest.importorskip("gmpy2")
    from hefl.he import paillier

    kit = paillier.keygen(key_size=2048, backend="gpu")
    x = np.linspace(-5, 5, 101)
    assert np.max(np.abs(kit.decrypt(kit.encrypt(x)) - x)) < 1e-6


def test_bad_ids_rejected(backend, oracle):
    a = oracle.C(oracle.rand_c(4))
    with pytest.raises(ValueError, match="bucket ids"):
        backend.bucket_sum(a, np.array([[0], [1], [5], [0]], dtype=np.int32), 5)
    with pytest.raises(ValueError, match="bucket ids"):
        backend.bucket_sum(a, np.array([[0], [-2], [1], [0]], dtype=np.int32), 5)


def test_make_backend_is_gpu(key2048):
    import hefl.gpu as hg

    be = hg.make_backend(key2048)
    assert be.name == "gpu"
    assert isinstance(BackendUnavailableError("x"), RuntimeError)


def test_warm_up_loads_both_widths_for_2048_bit_keys(backend):
    import hefl.gpu.backend as hb

    took = backend.warm_up()
    assert set(took) == {"paillier.cu NL=128 TPI=8", "paillier.cu NL=128 TPI=32",
                         "crt.cu NL=64 TPI=8", "crt.cu NL=64 TPI=32"}, took
    loaded = set(hb._MODULES)
    assert max(backend.warm_up().values()) < 0.5  # loaded: nothing left to compile
    assert set(hb._MODULES) == loaded


def test_held_rows_give_the_gathered_histogram(backend, oracle):
    a = oracle.C(oracle.rand_c(500))
    held = backend.hold(a)
    rows = np.sort(np.random.default_rng(5).choice(500, 200, replace=False))
    ids = np.random.default_rng(6).integers(-1, 9, size=(200, 3), dtype=np.int32)
    assert np.array_equal(backend.bucket_sum_held(held, rows, ids, 9),
                          backend.bucket_sum(a[rows], ids, 9))


def test_3072_bit_keys_match_the_oracle():
    """3072-bit keys (192-limb ciphertexts, 96-limb CRT halves): every op equals the oracle.
    Added after the 2026-11-27 device runs, which compiled these modules (hefl gpu warmup)
    but checked results at 2048 bits only."""
    from hefl.gpu.backend import GpuPaillierBackend
    from hefl.gpu.reference import keygen_params

    params = keygen_params(3072)
    be, oracle = GpuPaillierBackend(params), _checks.Oracle(params)
    assert be.nl == 192
    for check in _checks.ALL_CHECKS:
        check(be, oracle)
