"""GpuPaillierBackend end to end on the CPU, through an emulated CuPy (tests/gpu/emu).

The kernels' CUDA source is compiled with g++ against a small emulation of warp
intrinsics (one thread per lane), and the real backend drives it through a stand-in for
CuPy.  This runs every backend operation — the kernel code and the Python glue around it
— against the Python-integer oracle on machines without a GPU.  Small keys only (the
emulation is slow); the same checks run on a real GPU with a 2048-bit key in
test_gpu_backend.py.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))

import _checks

from hefl.gpu.backend import GpuPaillierBackend
from hefl.gpu.reference import keygen_params
from hefl.he._backend import limbs_to_ints

pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found (needed to emulate)"),
    pytest.mark.skipif(sys.platform != "linux", reason="emulation assumes x86-64/arm64 Linux"),
]


@pytest.fixture(scope="module")
def key256():
    return keygen_params(256)


@pytest.fixture
def emu_backend(monkeypatch, key256, request):
    import cupy_emu

    cupy_emu.install(monkeypatch)
    import hefl.gpu.backend as hb

    monkeypatch.setattr(hb, "_CHUNK", 2)  # exercise the chunked launches on tiny batches
    tpi, tpi_crt = request.param
    return GpuPaillierBackend(key256, tpi=tpi, tpi_crt=tpi_crt, fb_window=4)


@pytest.mark.parametrize("emu_backend", [(8, 8), (4, 2)], indirect=True, ids=["tpi8", "tpi4"])
@pytest.mark.parametrize("check", _checks.ALL_CHECKS, ids=lambda f: f.__name__)
def test_backend_op_on_emulated_gpu(emu_backend, key256, check):
    o = _checks.Oracle(key256)
    if check is _checks.check_bucket_sum:
        check(emu_backend, o, rows=20, feats=2, buckets=4)
    elif check is _checks.check_sum:
        check(emu_backend, o, k=20)
    else:
        check(emu_backend, o, k=3)


def test_available_with_emulated_cupy(monkeypatch):
    import cupy_emu

    cupy_emu.install(monkeypatch)
    import hefl.gpu as hg

    assert hg.available() is True
    info = hg.device_info()
    assert info["available"] and "name" in info


def _record_widths(be) -> list[int]:
    """Spy on ``be``'s kernel launches: the list fills with each launch's lanes per number."""
    widths: list[int] = []
    launch = be._launch
    be._launch = lambda fn, groups, tpi, args: (widths.append(tpi), launch(fn, groups, tpi, args))
    return widths


@pytest.mark.parametrize("emu_backend", [(4, 2)], indirect=True, ids=["tpi4"])
def test_shift_pack_widens_small_launches_with_the_same_result(emu_backend, key256):
    be = emu_backend
    o = _checks.Oracle(key256)
    assert be.nl == 16 and be._latency_tpi(3) == 16  # few groups: as many lanes as divide nl
    assert be._latency_tpi(10**9) == be.tpi  # a full device: throughput width
    widths = _record_widths(be)
    ms = list(range(1, 11))
    ca = be.to_device(o.C([o.encrypt(m) for m in ms]))
    widths.clear()
    wide = be.shift_pack_device(ca, 24, 4)
    assert widths == [16]
    be._latency_tpi = lambda groups: be.tpi
    widths.clear()
    narrow = be.shift_pack_device(ca, 24, 4)
    assert widths == [4]
    wide, narrow = be.from_device(wide), be.from_device(narrow)
    assert np.array_equal(wide, narrow)  # same Montgomery arithmetic, bit for bit
    want = [sum(ms[i] << (24 * (i - j0)) for i in range(j0, min(10, j0 + 4))) for j0 in (0, 4, 8)]
    assert [o.decrypt(c) for c in limbs_to_ints(wide)] == want


@pytest.mark.parametrize("emu_backend", [(4, 2)], indirect=True, ids=["tpi4"])
def test_decrypt_widens_small_launches_with_the_same_result(emu_backend, key256):
    be = emu_backend
    o = _checks.Oracle(key256)
    assert be.nl_crt == 8 and be._latency_tpi(6, crt=True) == 8
    assert be._latency_tpi(10**9, crt=True) == be.tpi_crt
    widths = _record_widths(be)
    ms = [secrets.randbelow(o.n) for _ in range(3)]
    c = o.C([o.encrypt(m) for m in ms])
    wide = be.decrypt(c)
    be._latency_tpi = lambda groups, crt=False: be.tpi_crt if crt else be.tpi
    narrow = be.decrypt(c)
    assert 8 in widths and widths[-2:] == [2, 2]  # k_decrypt_half wide, then both narrow
    assert np.array_equal(wide, narrow) and limbs_to_ints(wide) == ms


def _load_gpu_bench():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_vs_cpu.py"
    spec = importlib.util.spec_from_file_location("gpu_vs_cpu_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("emu_backend", [(4, 2)], indirect=True, ids=["tpi4"])
def test_benchmark_latency_widths_record(emu_backend, key256):
    # what the device check records ("one SecureBoost level" in gpu_vs_cpu_h200.log):
    # both widths timed, results equal
    bench = _load_gpu_bench()
    lines = []
    rec = bench.latency_widths(emu_backend, key256, lines.append, cells=12, slots=4, bits=24)
    assert "error" not in rec, rec
    assert rec["same_result"] and rec["tpi_chosen"] == [16, 8] and rec["tpi_throughput"] == [4, 2]
    assert rec["shift_pack_s"] > 0 and rec["decrypt_throughput_width_s"] > 0
    assert "same results: True" in lines[-1]
    assert "_latency_tpi" not in vars(emu_backend)  # the override is undone


@pytest.mark.parametrize("emu_backend", [(4, 2)], indirect=True, ids=["tpi4"])
def test_warm_up_loads_every_module_the_operations_launch(emu_backend, key256):
    import hefl.gpu.backend as hb

    be = emu_backend
    took = be.warm_up()
    assert set(took) == {"paillier.cu NL=16 TPI=4", "paillier.cu NL=16 TPI=16",
                         "crt.cu NL=8 TPI=2", "crt.cu NL=8 TPI=8"}
    assert all(s >= 0 for s in took.values())
    loaded = dict(hb._MODULES)
    o = _checks.Oracle(key256)
    for check in (_checks.check_encrypt, _checks.check_decrypt, _checks.check_device_pipeline):
        check(be, o, k=3)
    _checks.check_bucket_sum(be, o, rows=8, feats=2, buckets=3)
    ca = be.to_device(o.C([o.encrypt(m) for m in range(5)]))
    be.shift_pack_device(ca, 24, 4)
    assert hb._MODULES == loaded  # nothing compiled or loaded after the warm-up
    # a public key has no CRT kernels to load
    public = GpuPaillierBackend(dataclasses.replace(key256, p=None, q=None), tpi=4, tpi_crt=2)
    assert set(public.warm_up()) == {"paillier.cu NL=16 TPI=4", "paillier.cu NL=16 TPI=16"}


def test_cli_warmup_on_emulated_gpu(monkeypatch, capsys):
    import cupy_emu

    cupy_emu.install(monkeypatch)
    monkeypatch.delenv("HEFL_GPU_TPI", raising=False)
    from hefl.cli import main

    assert main(["gpu", "warmup", "--key-size", "256"]) == 0
    out = capsys.readouterr().out
    for module in ("paillier.cu NL=16 TPI=8", "paillier.cu NL=16 TPI=16", "crt.cu NL=8 TPI=8"):
        assert module in out
    assert "kernels cached in" in out


def test_prefetch_starts_the_device_in_the_background(monkeypatch):
    import cupy_emu

    cupy_emu.install(monkeypatch)
    import hefl.gpu as hg

    monkeypatch.setattr(hg, "_PREFETCH", None)
    made = []
    real_empty = cupy_emu.empty
    monkeypatch.setattr(cupy_emu, "empty", lambda *a, **k: made.append(a) or real_empty(*a, **k))
    t = hg.prefetch()
    t.join(30)
    assert not t.is_alive() and made == [(1,)] and hg.prefetch() is t


@pytest.mark.parametrize("emu_backend", [(4, 2)], indirect=True, ids=["tpi4"])
def test_benchmark_slot_sweep_record(emu_backend, key256):
    bench = _load_gpu_bench()
    timed = bench._timeit
    bench._timeit = lambda fn, sync, reps, *args: timed(fn, sync, 1, *args)  # emulation is slow
    lines = []
    rec = bench.slot_sweep(emu_backend, key256, lines.append, cells=12, bits=24,
                           slot_counts=(4, 2))
    assert "error" not in rec, rec
    assert {k: v["ciphertexts"] for k, v in rec["by_slots"].items()} == {"4": 3, "2": 6}
    assert rec["best_slots"] in (4, 2) and len(lines) == 3
    assert rec["model_slots"] == 1  # a dozen cells, a tiny key: no compression chain at all


@pytest.fixture
def emu_kit(monkeypatch):
    import cupy_emu

    cupy_emu.install(monkeypatch)
    monkeypatch.setenv("HEFL_GPU_FB_WINDOW", "4")  # a small fixed-base table: emulation is slow
    from hefl.he import paillier

    return paillier.keygen(256, backend="gpu", allow_insecure=True)


def test_kit_on_the_emulated_gpu_decrypts(emu_kit):
    # the key owner's full check before decryption runs on a CPU backend beside the GPU one
    assert emu_kit.backend.name == "gpu"
    x = np.array([1.5, -2.25, 0.0, 1e3])
    ca = emu_kit.encrypt(x)
    assert np.allclose(emu_kit.decrypt(ca), x)
    assert np.allclose(emu_kit.decrypt(ca + ca), 2 * x)
    assert emu_kit._checker().name == "cpu"


def test_held_ciphertexts_give_the_gathered_histogram(emu_kit):
    from hefl.he._limbkit import HeldCiphers

    kit = emu_kit
    assert kit.backend.name == "gpu"
    rng = np.random.default_rng(3)
    ca = kit.encrypt(rng.integers(-50, 50, size=30).astype(float))
    held = kit.hold(ca)
    assert isinstance(held, HeldCiphers) and held.size == 30
    for rows in (np.array([0, 3, 4, 9, 17, 29]), np.arange(30), np.array([], dtype=np.int64)):
        ids = rng.integers(-1, 5, size=(rows.size, 3))
        want = kit.bucket_sum(ca[rows], ids, 5)
        got = kit.bucket_sum_held(held, rows, ids, 5)
        assert got.shape == want.shape == (3, 5)
        assert got.raw() == want.raw()  # the same products, bit for bit
    one_d = kit.bucket_sum_held(held, np.array([1, 2]), np.array([0, 0]), 2)
    assert one_d.shape == (2,)
    assert np.allclose(kit.decrypt(one_d), [kit.decrypt(ca[1:3]).sum(), 0])
    with pytest.raises(ValueError, match="rows must be in"):
        kit.bucket_sum_held(held, np.array([30]), np.zeros((1, 1)), 2)
    with pytest.raises(ValueError, match="1-d integer"):
        kit.bucket_sum_held(held, np.array([0.5]), np.zeros((1, 1)), 2)
    with pytest.raises(ValueError, match="bucket ids"):
        kit.bucket_sum_held(held, np.array([0]), np.array([[2]]), 2)


def test_secureboost_on_the_emulated_gpu_matches_the_cpu(emu_kit):
    # the whole GPU path of SecureBoost (encryption, held histograms, compression,
    # decryption) against the CPU backend: lossless, so the same model
    from sklearn.datasets import make_classification

    from hefl.he.base import AdditiveKit
    from hefl.models.secureboost import SecureBoostClassifier

    X, y = make_classification(n_samples=60, n_features=4, random_state=1)
    probs, slots = {}, {}
    real = AdditiveKit.shift_and_pack

    def spy(self, ca, width_bits, per_plaintext):
        slots[self.backend.name].add(per_plaintext)
        return real(self, ca, width_bits, per_plaintext)

    for backend in ("gpu", "cpu"):
        slots[backend] = set()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(AdditiveKit, "shift_and_pack", spy)
            clf = SecureBoostClassifier(n_estimators=2, max_depth=2, max_bin=4, key_size=256,
                                        allow_insecure=True, backend=backend, transport="threads",
                                        parties={"alice": [0, 1], "bob": [2, 3]}, random_state=0)
            probs[backend] = clf.fit(X, y).predict_proba(X)
    assert np.array_equal(probs["gpu"], probs["cpu"])
    # a few cells per request: the GPU key owner asks for one value per ciphertext (no
    # compression chain), the CPU one for as many as fit
    assert slots["gpu"] == {1} and min(slots["cpu"]) > 1


def test_compression_on_a_gpu_packs_fewer_values_where_decryption_is_cheap():
    # the cost model alone (no device): the benchmark's deepest SecureBoost request
    # (8 nodes x 10 features x 33 bins of 107-bit values, 2048-bit key) and larger ones
    from types import SimpleNamespace

    from hefl.gpu.backend import GpuPaillierBackend

    pick = GpuPaillierBackend.compress_slots
    key2048 = SimpleNamespace(nl=128)
    assert pick(key2048, 2640, 107, 19) == 2
    counts = [pick(key2048, n, 107, 19) for n in (10, 1_000, 10_000, 100_000, 10**7)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 19
    assert pick(key2048, 10**7, 107, 5) == 5  # never more than fit
    assert pick(SimpleNamespace(nl=192), 2640, 160, 12) >= 1  # 3072-bit keys scale


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
def test_hetero_lr_on_the_emulated_gpu_matches_the_cpu(emu_kit, protocol):
    # hetero LR's Paillier protocols on the GPU backend: the same model as on the CPU
    from sklearn.datasets import make_classification

    from hefl.models.hetero_lr import HeteroLogisticRegression

    X, y = make_classification(n_samples=12, n_features=4, random_state=2)
    coefs = {}
    for backend in ("gpu", "cpu"):
        clf = HeteroLogisticRegression(he="paillier", key_size=256, allow_insecure=True,
                                       backend=backend, transport="threads", protocol=protocol,
                                       max_iter=1, batch_size=12, random_state=0, tol=None,
                                       parties={"guest": [0, 1], "host": [2, 3]})
        coefs[backend] = clf.fit(X, y).coef_
    assert np.allclose(coefs["gpu"], coefs["cpu"], rtol=0, atol=1e-9)


def test_device_rows_from_callers_are_checked_and_made_contiguous(emu_kit):
    be = emu_kit.backend
    x = emu_kit.encrypt(np.array([1, 2, 3, 4]))
    d = be.to_device(x._flat())
    strided = d[::2]  # a raw kernel gets only the pointer: it must not read rows 0, 1
    back = be.from_device(strided)
    assert np.array_equal(back, x._flat()[::2])
    assert np.array_equal(be.from_device(be.sum_device(strided)), be.sum(x._flat()[::2])[None])
    with pytest.raises(ValueError, match="4 ciphertexts but 1 scalars"):
        be.mul_scalar_device(d, np.ones((1, 2), dtype=np.uint64))
    with pytest.raises(ValueError, match="expected device rows of shape"):
        be.sum_device(d[:, :3])
    with pytest.raises(ValueError, match="bucket ids must be in"):
        be.bucket_sum_device(d, np.array([2**32 + 1, 0, 0, 0]), 2)


def test_the_fixed_base_table_is_built_once_across_pool_threads(emu_kit, monkeypatch):
    from hefl.gpu import backend as gb

    be = emu_kit.backend
    assert be.n_jobs == 1  # one pool thread for one device
    be._fb_table = None
    calls = []
    real = gb.C.fixed_base_seeds

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(gb.C, "fixed_base_seeds", counting)
    import threading

    threads = [threading.Thread(target=be.obfuscators_device, args=(2,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_lane_widths_are_checked_and_a_cpu_kit_can_use_gpu_held_ciphertexts(emu_kit):
    from hefl.gpu.backend import GpuPaillierBackend
    from hefl.he import paillier

    with pytest.raises(ValueError, match="tpi must be one of"):
        GpuPaillierBackend(emu_kit.params, tpi=3)
    with pytest.raises(ValueError, match="tpi_crt must be one of"):
        GpuPaillierBackend(emu_kit.params, tpi_crt=3)
    cpu = paillier.PaillierSecretKit(emu_kit._p, emu_kit._q, emu_kit.hs, backend="cpu")
    ca = emu_kit.encrypt(np.array([1.0, 2.0, 4.0]))
    held = emu_kit.hold(ca)
    out = cpu.bucket_sum_held(held, np.array([0, 2]), np.array([0, 0]), 1)
    assert cpu.decrypt(out).tolist() == [5.0]
