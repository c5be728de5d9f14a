"""GPU vs CPU Paillier throughput: encrypt, decrypt, add, multiply by plain, bucket_sum.

For batch sizes 10^3 ... 10^6 this times each operation of the GPU backend
(:class:`hefl.gpu.backend.GpuPaillierBackend`) and of the CPU backend using all cores
(:class:`hefl.he._cpu.CpuPaillierBackend`, or a process-pool gmpy2 / Python-int
implementation in this file where that backend cannot be imported), in the same run,
prints a table, writes one JSON record (one line) and a PNG plot (skipped with a message
when matplotlib is missing).

GPU figures come in two flavours:

* ``gpu``: device-resident — inputs already on the GPU and outputs left there
  (ciphertexts in Montgomery form), which is how a pipeline of operations runs;
* ``gpu_host``: the host API of the backend — numpy in, numpy out, transfers included.

CPU figures are measured on ``min(size, --cpu-cap)`` rows (the CPU rate hardly depends
on the batch size once every core is busy); the record says how many rows were timed.
``encrypt`` includes generating a fresh DJN obfuscator (hs^alpha, alpha of n_bits/2 bits
from os.urandom) for every ciphertext, on both sides.  ``bucket_sum`` counts samples per
second with 10 features and 32 buckets; ``histogram_1M_s`` is the time for 10^6 samples
x 10 features x 32 bins on the GPU (device-resident).

Run: ``python benchmarks/gpu_vs_cpu.py [--max-size 1000000] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hefl.he._backend import ints_to_limbs, limbs_to_ints

OPS = ["encrypt", "decrypt", "add", "mul_scalar", "bucket_sum"]
TARGETS = {"encrypt": 1e6, "decrypt": 2e5, "add": 1e8, "histogram_1M_s": 0.2}
N_FEAT, N_BUCKETS = 10, 32


# ------------------------------------------------------------------ CPU fallback
try:
    import gmpy2 as _g
except ImportError:  # the GPU machine's image may lack gmpy2
    _g = None


def _pm(b, e, m):
    return _g.powmod(b, e, m) if _g is not None else pow(b, e, m)


def _mpz(x):
    return _g.mpz(x) if _g is not None else int(x)


_FB: dict = {}


def _init_worker(n2: int, hs: int, alpha_bits: int, w: int) -> None:
    """Per-process fixed-base table T[i][d] = hs^(d 2^(w i)) mod n^2 (as the CPU backend)."""
    n2m, base = _mpz(n2), _mpz(hs)
    table = []
    for _ in range(-(-alpha_bits // w)):
        row, x = [_mpz(1)], _mpz(1)
        for _ in range((1 << w) - 1):
            x = x * base % n2m
            row.append(x)
        table.append(row)
        base = _pm(base, 1 << w, n2m)
    _FB.update(table=table, w=w, n2=n2m)


def _w_encrypt(args):
    n, _n2, _hs, alpha_bits, ms = args  # the table (per process) holds n^2 and hs
    n = _mpz(n)
    table, w, n2m = _FB["table"], _FB["w"], _FB["n2"]
    mask = (1 << w) - 1
    out = []
    for m in ms:
        a = int.from_bytes(os.urandom((alpha_bits + 7) // 8), "little") >> (-alpha_bits % 8)
        r = _mpz(1)
        for i, row in enumerate(table):
            d = (a >> (w * i)) & mask
            if d:
                r = r * row[d] % n2m
        out.append(int((1 + _mpz(m) * n) * r % n2m))
    return out


def _w_decrypt(args):
    p, q, hp, hq, qinv, cs = args
    p, q = _mpz(p), _mpz(q)
    p2, q2 = p * p, q * q
    out = []
    for c in cs:
        c = _mpz(c)
        mp = (_pm(c % p2, p - 1, p2) - 1) // p * hp % p
        mq = (_pm(c % q2, q - 1, q2) - 1) // q * hq % q
        out.append(int(mq + ((mp - mq) * qinv % p) * q))
    return out


def _w_add(args):
    n2, a, b = args
    n2 = _mpz(n2)
    return [int(_mpz(x) * y % n2) for x, y in zip(a, b)]


def _w_mul(args):
    n2, a, k = args
    return [int(_pm(_mpz(x), y, n2)) for x, y in zip(a, k)]


def _w_bucket(args):
    n2, a, ids, nb = args
    n2 = _mpz(n2)
    F = ids.shape[1]
    acc = [[_mpz(1)] * nb for _ in range(F)]
    for x, row in zip(a, ids):
        x = _mpz(x)
        for f in range(F):
            b = row[f]
            if b >= 0:
                acc[f][b] = acc[f][b] * x % n2
    return [[int(v) for v in r] for r in acc]


class PoolCpuBackend:
    """Paillier on all cores with a process pool (gmpy2, else Python ints).

    Only the benchmark uses it, where ``hefl.he._cpu`` cannot be imported.
    """

    name = "cpu-pool"

    def __init__(self, params, n_jobs: int, fb_window: int = 8):
        self.params = params
        self.n_jobs = n_jobs
        self.impl = (f"process pool x{n_jobs}, {'gmpy2' if _g is not None else 'Python int'}, "
                     f"fixed-base window {fb_window}")
        self.pool = ProcessPoolExecutor(
            max_workers=n_jobs, initializer=_init_worker,
            initargs=(params.nsquare, params.hs, params.alpha_bits, fb_window))
        p, q = params.p, params.q
        self.dec = (p, q, _hx(p, params.n), _hx(q, params.n), pow(q, -1, p))

    def _split(self, seq):
        k = max(1, -(-len(seq) // (4 * self.n_jobs)))
        return [seq[i : i + k] for i in range(0, len(seq), k)]

    def _map(self, fn, chunks):
        return [v for part in self.pool.map(fn, chunks) for v in part]

    def encrypt_fresh(self, m):
        P = self.params
        ms = limbs_to_ints(m)
        res = self._map(_w_encrypt, [(P.n, P.nsquare, P.hs, P.alpha_bits, c) for c in self._split(ms)])
        return ints_to_limbs(res, P.limbs_c)

    def decrypt(self, c):
        res = self._map(_w_decrypt, [(*self.dec, ch) for ch in self._split(limbs_to_ints(c))])
        return ints_to_limbs(res, self.params.limbs_n)

    def add(self, a, b):
        A, B = limbs_to_ints(a), limbs_to_ints(b)
        k = max(1, -(-len(A) // (4 * self.n_jobs)))
        chunks = [(self.params.nsquare, A[i : i + k], B[i : i + k]) for i in range(0, len(A), k)]
        return ints_to_limbs(self._map(_w_add, chunks), self.params.limbs_c)

    def mul_scalar(self, a, kk):
        A, K = limbs_to_ints(a), limbs_to_ints(kk)
        k = max(1, -(-len(A) // (4 * self.n_jobs)))
        chunks = [(self.params.nsquare, A[i : i + k], K[i : i + k]) for i in range(0, len(A), k)]
        return ints_to_limbs(self._map(_w_mul, chunks), self.params.limbs_c)

    def bucket_sum(self, a, ids, nb):
        A = limbs_to_ints(a)
        k = max(1, -(-len(A) // self.n_jobs))
        parts = list(self.pool.map(
            _w_bucket, [(self.params.nsquare, A[i : i + k], ids[i : i + k], nb) for i in range(0, len(A), k)]
        ))
        n2 = self.params.nsquare
        F = ids.shape[1]
        out = []
        for f in range(F):
            for b in range(nb):
                acc = 1
                for part in parts:
                    acc = acc * part[f][b] % n2
                out.append(acc)
        return ints_to_limbs(out, self.params.limbs_c).reshape(F, nb, -1)

    def close(self):
        self.pool.shutdown()


def _hx(p: int, n: int) -> int:
    return pow((pow(n + 1, p - 1, p * p) - 1) // p, -1, p)


def make_cpu_backend(params, n_jobs: int, impl: str = "auto"):
    """The CPU baseline on all cores.

    ``hefl.he._cpu.CpuPaillierBackend`` when its GMP C extension is built (its kernels
    release the GIL, so its threads use every core); otherwise :class:`PoolCpuBackend`,
    because the backend's gmpy2 fallback holds the GIL and would use a single core.
    """
    if impl == "pool":
        return PoolCpuBackend(params, n_jobs)
    try:
        from hefl.he._cpu import CpuPaillierBackend, native_available

        if native_available():
            be = CpuPaillierBackend(params, n_jobs=n_jobs)
            be.impl = f"hefl.he._cpu (GMP C extension), {n_jobs} threads"
            return be
        print("[cpu] hefl._native is not built: gmpy2 process pool instead (all cores)")
    except Exception as exc:  # noqa: BLE001 - missing gmpy2/extension on the GPU machine
        print(f"[cpu] hefl.he._cpu unavailable ({type(exc).__name__}: {exc}); using a process pool")
    return PoolCpuBackend(params, n_jobs)


def cpu_encrypt(be, m):
    if hasattr(be, "encrypt_fresh"):
        return be.encrypt_fresh(m)
    return be.encrypt(m, be.obfuscators(m.shape[0]))


# ------------------------------------------------------------------ data
def rand_plain(n_rows: int, params, bits: int | None = None) -> np.ndarray:
    """Random plaintexts below 2^(n_bits - 1) < n (or below 2^bits), (N, Ln) uint64."""
    ln = params.limbs_n
    bits = bits or params.n.bit_length() - 1
    raw = np.frombuffer(os.urandom(8 * ln * n_rows), dtype="<u8").reshape(n_rows, ln).copy()
    full, rem = divmod(bits, 64)
    if full < ln:
        raw[:, full] &= np.uint64((1 << rem) - 1)
        raw[:, full + 1 :] = 0
    return raw


def _timeit(fn, sync, reps: int, *args) -> float:
    """Median wall time of ``fn(*args)`` over ``reps`` runs, synchronised before and after."""
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn(*args)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------ GPU parts
def _obfuscators_then_encrypt(be, m):
    return be.encrypt(m, be.obfuscators(m.shape[0]))


def gpu_tune(params, log, rows_n2: int = 1 << 17) -> dict:
    """Montgomery-product rate for several lane counts (k_mul_chain, bench.cu)."""
    import cupy as cp

    from hefl.gpu import _consts as C
    from hefl.gpu.backend import _module

    out = {}
    for label, mod_value in (("n2", params.nsquare), ("p2", params.p**2)):
        nl = C.limbs32(mod_value)
        nl = C.round_up(nl, 32)
        rows = rows_n2 if label == "n2" else 2 * rows_n2
        iters = 64
        a_h = np.frombuffer(os.urandom(4 * nl * rows), dtype="<u4").reshape(rows, nl).copy()
        a_h[:, -1] = 0  # rows below 2^(32(nl-1)) <= the modulus: valid operands for b
        a = cp.asarray(a_h)
        b = cp.asarray(a_h[::-1].copy())
        nrow = cp.asarray(C.ints_to_u32([mod_value], nl)[0])
        np0 = (-pow(mod_value, -1, 1 << 32)) % (1 << 32)
        for tpi in (4, 8, 16):
            if nl % tpi:
                continue
            try:
                t0 = time.perf_counter()
                fn = _module("bench.cu", nl, tpi).get_function("k_mul_chain")
                res = cp.empty_like(a)
                args = (a, b, res, np.int64(rows), np.int32(iters), nrow, np.uint32(np0))
                grid = ((rows * tpi + 127) // 128,)
                fn(grid, (128,), args)
                cp.cuda.Device().synchronize()
                compile_s = time.perf_counter() - t0
                # correctness of one row against Python ints
                r_int = 1 << (32 * nl)
                j = min(3, rows - 1)
                x = int.from_bytes(a_h[j].tobytes(), "little")
                y = int.from_bytes(a_h[::-1][j].tobytes(), "little") % mod_value
                rinv = pow(r_int, -1, mod_value)
                want = x
                for _ in range(iters):
                    want = want * y * rinv % mod_value
                got = int.from_bytes(cp.asnumpy(res[j]).tobytes(), "little")
                dt = _timeit(fn, cp.cuda.Device().synchronize, 3, grid, (128,), args)
                rate = rows * iters / dt
                out[f"{label}_nl{nl}_tpi{tpi}"] = {
                    "montmul_per_s": rate, "regs": fn.num_regs, "compile_s": compile_s,
                    "correct": got == want,
                }
                log(f"[tune] {label} {32 * nl}-bit tpi={tpi:2d}: {rate / 1e6:8.1f} M montmul/s "
                    f"regs={fn.num_regs} ok={got == want}")
            except Exception as exc:  # noqa: BLE001
                out[f"{label}_nl{nl}_tpi{tpi}"] = {"error": repr(exc)}
                log(f"[tune] {label} tpi={tpi}: {exc!r}")
    return out


def latency_widths(be, params, log, cells: int = 16 * 10 * 33, slots: int = 19,
                   bits: int = 107) -> dict:
    """The latency-bound calls of one SecureBoost level (16 nodes x 10 features x 33 bins):
    the passive party's cipher compression (19 values of 107 bits per ciphertext, a few
    hundred long Horner chains) and the active party's decryption of the result. Timed at
    the widths the backend picks and at the throughput widths; results must be equal."""
    try:
        cd = be.to_device(be.encrypt_fresh(rand_plain(cells, params)))
        groups = -(-cells // slots)
        chosen = (be._latency_tpi(groups), be._latency_tpi(2 * groups, crt=True))

        def timed() -> tuple[float, float, tuple]:
            packed = be.shift_pack_device(cd, bits, slots)  # compiles the modules of
            plain = be.decrypt_device(packed)  # these widths
            t_pack = _timeit(be.shift_pack_device, be.synchronize, 3, cd, bits, slots)
            t_dec = _timeit(be.decrypt_device, be.synchronize, 3, packed)
            return t_pack, t_dec, (be.from_device(packed), be._cp.asnumpy(plain))

        pack_c, dec_c, res_c = timed()
        be._latency_tpi = lambda groups, crt=False: be.tpi_crt if crt else be.tpi
        try:
            pack_t, dec_t, res_t = timed()
        finally:
            del be._latency_tpi
        same = all(np.array_equal(a, b) for a, b in zip(res_c, res_t))
        out = {"cells": cells, "slots": slots, "slot_bits": bits, "tpi_chosen": list(chosen),
               "tpi_throughput": [be.tpi, be.tpi_crt], "shift_pack_s": pack_c,
               "shift_pack_throughput_width_s": pack_t, "decrypt_s": dec_c,
               "decrypt_throughput_width_s": dec_t, "same_result": bool(same)}
        log(f"[gpu] one SecureBoost level ({cells} cells -> {groups} ciphertexts): shift_pack "
            f"{pack_c * 1e3:.1f} ms at tpi={chosen[0]} vs {pack_t * 1e3:.1f} ms at tpi={be.tpi}; "
            f"decrypt {dec_c * 1e3:.1f} ms at tpi={chosen[1]} vs {dec_t * 1e3:.1f} ms at "
            f"tpi={be.tpi_crt}; same results: {same}")
        return out
    except Exception as exc:  # noqa: BLE001 - a side measurement: report, go on
        log(f"[gpu] latency width comparison failed: {exc!r}")
        return {"error": repr(exc)}


def slot_sweep(be, params, log, cells: int = 16 * 10 * 33, bits: int = 107,
               slot_counts: tuple[int, ...] = (19, 10, 6, 4, 3, 2, 1)) -> dict:
    """One SecureBoost level's compression and decryption at fewer values per ciphertext.

    On a GPU both calls are latency-bound at this size: compression costs one Horner
    chain of (slots - 1) * (bits + 1) steps whatever the number of chains, decryption
    about one exponentiation whatever the number of ciphertexts while they fill little of
    the device. Fewer slots shorten the chain and add ciphertexts: this records where the
    sum is smallest (the CPU, where work is what counts, wants as many slots as fit), next
    to what the backend's cost model (``compress_slots``, what SecureBoost uses) picks."""
    try:
        cd = be.to_device(be.encrypt_fresh(rand_plain(cells, params)))
        out: dict = {"cells": cells, "slot_bits": bits, "by_slots": {}}
        for slots in slot_counts:
            packed = be.shift_pack_device(cd, bits, slots)  # loads any module these need
            be.decrypt_device(packed)
            t_pack = _timeit(be.shift_pack_device, be.synchronize, 3, cd, bits, slots)
            t_dec = _timeit(be.decrypt_device, be.synchronize, 3, packed)
            out["by_slots"][str(slots)] = {"ciphertexts": int(packed.shape[0]),
                                           "shift_pack_s": t_pack, "decrypt_s": t_dec}
            log(f"[gpu] level at {slots:2d} slots: {packed.shape[0]:5d} ciphertexts, shift_pack "
                f"{t_pack * 1e3:7.1f} ms + decrypt {t_dec * 1e3:7.1f} ms = "
                f"{(t_pack + t_dec) * 1e3:7.1f} ms")
        best = min(out["by_slots"].items(),
                   key=lambda kv: kv[1]["shift_pack_s"] + kv[1]["decrypt_s"])
        out["best_slots"] = int(best[0])
        out["model_slots"] = int(be.compress_slots(cells, bits, max(slot_counts)))
        log(f"[gpu] fastest at {out['best_slots']} slots; the cost model picks "
            f"{out['model_slots']}")
        return out
    except Exception as exc:  # noqa: BLE001 - a side measurement: report, go on
        log(f"[gpu] slot sweep failed: {exc!r}")
        return {"error": repr(exc)}


def run(args) -> dict:
    import hefl.gpu as hg
    from hefl.gpu.reference import keygen_params

    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    sizes = [s for s in args.sizes if s <= args.max_size]
    t_start = t0 = time.perf_counter()
    params = keygen_params(args.key_bits)
    log(f"key: {args.key_bits} bits, alpha {params.alpha_bits} bits ({time.perf_counter() - t0:.1f}s)")
    info = hg.device_info()
    record: dict = {
        "benchmark": "gpu_vs_cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "device": info,
        "key_bits": args.key_bits,
        "sizes": sizes,
        "features": N_FEAT,
        "buckets": N_BUCKETS,
        "targets": TARGETS,
    }
    n_jobs = args.jobs or os.cpu_count() or 1
    cpu = make_cpu_backend(params, n_jobs, args.cpu_impl)
    record["cpu_impl"] = getattr(cpu, "impl", type(cpu).__name__)
    log(f"cpu: {record['cpu_impl']}")

    warm = rand_plain(8, params)  # builds the CPU's fixed-base table outside the timings
    assert np.array_equal(cpu.decrypt(cpu_encrypt(cpu, warm)), warm)
    results: list[dict] = []
    cpu_rates: dict[str, dict[int, tuple[float, int]]] = {op: {} for op in OPS}

    # ---------------- CPU (all cores), on min(size, cap) rows
    for size in sizes:
        nc = min(size, args.cpu_cap)
        same = [s for s, v in cpu_rates["add"].items() if v[1] == nc]
        if same:
            for op in OPS:  # same row count already timed: reuse that size's figures
                cpu_rates[op][size] = cpu_rates[op][same[0]]
            continue
        m = rand_plain(nc, params)
        t = time.perf_counter()
        c = cpu_encrypt(cpu, m)
        cpu_rates["encrypt"][size] = (nc / (time.perf_counter() - t), nc)
        t = time.perf_counter()
        dec = cpu.decrypt(c)
        cpu_rates["decrypt"][size] = (nc / (time.perf_counter() - t), nc)
        assert np.array_equal(dec, m), "CPU decrypt mismatch"
        c2 = c[::-1].copy()
        t = time.perf_counter()
        cpu.add(c, c2)
        cpu_rates["add"][size] = (nc / (time.perf_counter() - t), nc)
        nm = min(nc, args.cpu_cap_pow)
        k = rand_plain(nm, params)
        t = time.perf_counter()
        cpu.mul_scalar(c[:nm], k)
        cpu_rates["mul_scalar"][size] = (nm / (time.perf_counter() - t), nm)
        ids = np.random.default_rng(1).integers(0, N_BUCKETS, size=(nc, N_FEAT), dtype=np.int32)
        t = time.perf_counter()
        cpu.bucket_sum(c, ids, N_BUCKETS)
        cpu_rates["bucket_sum"][size] = (nc / (time.perf_counter() - t), nc)
        log(f"[cpu] n={nc}: " + ", ".join(f"{op} {cpu_rates[op][size][0]:,.0f}/s" for op in OPS))
    if hasattr(cpu, "close"):
        cpu.close()

    # ---------------- GPU
    gpu_ok = hg.available()
    record["gpu_available"] = gpu_ok
    hist = None
    gres: dict[str, dict[int, dict]] = {op: {} for op in OPS}
    if not gpu_ok:
        log(f"[gpu] not available: {hg.unavailable_reason()} — CPU figures only")
    else:
        import cupy as cp

        from hefl.gpu.backend import GpuPaillierBackend

        if args.tune:
            record["tune"] = gpu_tune(params, log, args.tune_rows)
            for w in args.tune_fb:  # fixed-base window: table size vs products per obfuscator
                bw = GpuPaillierBackend(params, fb_window=w)
                t = time.perf_counter()
                bw.obfuscators_device(1)
                bw.synchronize()
                build = time.perf_counter() - t
                rows = 2 * args.tune_rows
                dt = _timeit(bw.obfuscators_device, bw.synchronize, 2, rows)
                record["tune"][f"fb_window_{w}"] = {
                    "obfuscators_per_s": rows / dt, "table_build_s": build,
                    "table_bytes": int(bw._table().nbytes)}
                log(f"[tune] fb_window={w:2d}: {rows / dt:,.0f} obfuscators/s, table "
                    f"{bw._table().nbytes / 1e6:.0f} MB built in {build:.2f}s")
                del bw
        t = time.perf_counter()
        be = GpuPaillierBackend(params, fb_window=args.fb_window)
        sync = be.synchronize
        # warm-up: compiles both modules and builds the fixed-base table
        warm = rand_plain(64, params)
        wc = be.encrypt_fresh(warm)
        assert np.array_equal(be.decrypt(wc), warm), "GPU warm-up round trip failed"
        be.bucket_sum(wc, np.zeros((64, 2), dtype=np.int32), 2)
        be.mul_scalar(wc[:4], warm[:4])
        sync()
        record["gpu_setup_s"] = time.perf_counter() - t
        record["gpu_backend"] = be.describe()
        record["gpu_kernels"] = be.kernel_info()
        log(f"[gpu] {info.get('name')}: setup (compile + table) {record['gpu_setup_s']:.1f}s, "
            f"{be.describe()}")

        for size in sizes:
            if args.budget_s and time.perf_counter() - t_start > args.budget_s:
                log(f"[gpu] time budget of {args.budget_s}s spent: skipping n={size} and above")
                record["gpu_skipped_sizes"] = [x for x in sizes if x >= size]
                break
            reps = 3 if size <= 100_000 else 2
            m = rand_plain(size, params)
            m_d = cp.asarray(m.view("<u4"))
            row: dict[str, dict] = {}
            # encrypt (fresh obfuscator per row)
            dt = _timeit(be.encrypt_device, sync, reps, m_d)
            dth = _timeit(be.encrypt_fresh, sync, 1 if size >= 10**6 else reps, m)
            dt2 = _timeit(_obfuscators_then_encrypt, sync, 1, be, m)
            row["encrypt"] = {"gpu": size / dt, "gpu_host": size / dth,
                              "gpu_host_obfuscators_then_encrypt": size / dt2}
            c_d = be.encrypt_device(m_d)
            c_h = be.from_device(c_d)
            # decrypt
            nd = min(size, args.gpu_cap_decrypt)
            dt = _timeit(be.decrypt_device, sync, reps, c_d[:nd])
            dth = _timeit(be.decrypt, sync, 1, c_h[:nd])
            got = be.decrypt(c_h[: min(nd, 4096)])
            assert np.array_equal(got, m[: got.shape[0]]), "GPU decrypt mismatch"
            row["decrypt"] = {"gpu": nd / dt, "gpu_host": nd / dth, "gpu_n": nd}
            # add
            c2_d = c_d[::-1].copy()
            c2_h = c_h[::-1].copy()
            dt = _timeit(be.add_device, sync, max(reps, 5), c_d, c2_d)
            dth = _timeit(be.add, sync, 1, c_h, c2_h)
            row["add"] = {"gpu": size / dt, "gpu_host": size / dth}
            # multiply by a full-size plaintext scalar
            nm = min(size, args.gpu_cap_pow)
            k = rand_plain(nm, params)
            k_d = cp.asarray(k.view("<u4"))
            dt = _timeit(be.mul_scalar_device, sync, 1, c_d[:nm], k_d)
            dth = _timeit(be.mul_scalar, sync, 1, c_h[:nm], k)
            ks_d = cp.asarray(rand_plain(nm, params, bits=64).view("<u4"))
            dts = _timeit(be.mul_scalar_device, sync, 1, c_d[:nm], ks_d)
            row["mul_scalar"] = {"gpu": nm / dt, "gpu_host": nm / dth, "gpu_n": nm,
                                 "gpu_64bit_scalar": nm / dts}
            # bucket_sum (histogram), samples/s
            ids = np.random.default_rng(2).integers(0, N_BUCKETS, size=(size, N_FEAT), dtype=np.int32)
            ids_d = cp.asarray(ids)
            dt = _timeit(be.bucket_sum_device, sync, reps, c_d, ids_d, N_BUCKETS)
            dth = _timeit(be.bucket_sum, sync, 1, c_h, ids, N_BUCKETS)
            row["bucket_sum"] = {"gpu": size / dt, "gpu_host": size / dth, "gpu_s": dt}
            if size == 10**6:
                hist = dt
            for op in OPS:
                gres[op][size] = row[op]
            log(f"[gpu] n={size:>8}: " + ", ".join(
                f"{op} {row[op]['gpu']:,.0f}/s (host {row[op]['gpu_host']:,.0f}/s)" for op in OPS))
            del c_d, c2_d, m_d
            cp.get_default_memory_pool().free_all_blocks()

        # correctness spot check of the device histogram against the CPU
        nchk = 512
        c_h = be.encrypt_fresh(rand_plain(nchk, params))
        ids = np.random.default_rng(3).integers(-1, 8, size=(nchk, 3), dtype=np.int32)
        g_hist = be.bucket_sum(c_h, ids, 8)
        n2 = params.nsquare
        vals = limbs_to_ints(c_h)
        ok = True
        for f in range(3):
            for b in range(8):
                acc = 1
                for i in np.flatnonzero(ids[:, f] == b):
                    acc = acc * vals[i] % n2
                ok &= limbs_to_ints(g_hist[f, b][None, :])[0] == acc
        record["gpu_histogram_check"] = bool(ok)
        log(f"[gpu] histogram spot check vs Python ints: {'ok' if ok else 'MISMATCH'}")
        record["latency_sb_level"] = latency_widths(be, params, log)
        record["latency_sb_slots"] = slot_sweep(be, params, log)

    # ---------------- records
    for size in sizes:
        for op in OPS:
            r = {"op": op, "n": size}
            if size in cpu_rates[op]:
                r["cpu_ops_per_s"], r["cpu_n"] = cpu_rates[op][size]
            if size in gres[op]:
                for key, val in gres[op][size].items():
                    r[key if key.endswith(("_n", "_s")) else f"{key}_ops_per_s"] = val
            results.append(r)
    summary: dict = {}
    for op in OPS:
        # the largest batch with a GPU figure (all sizes may not have run), else the largest
        big = max(gres[op]) if gres[op] else (max(sizes) if sizes else None)
        s: dict = {"n": big}
        if big in gres[op]:
            s["gpu"] = gres[op][big]["gpu"]
            s["gpu_host"] = gres[op][big]["gpu_host"]
        if big in cpu_rates[op]:
            s["cpu"] = cpu_rates[op][big][0]
            s["cpu_n"] = cpu_rates[op][big][1]
        if "gpu" in s and "cpu" in s:
            s["speedup"] = s["gpu"] / s["cpu"]
        if op in TARGETS and "gpu" in s:
            s["target"] = TARGETS[op]
            s["meets_target"] = bool(s["gpu"] >= TARGETS[op])
        summary[op] = s
    if hist is not None:
        summary["histogram_1M_s"] = {"gpu_s": hist, "target_s": TARGETS["histogram_1M_s"],
                                     "meets_target": bool(hist <= TARGETS["histogram_1M_s"])}
    record["results"] = results
    record["summary"] = summary
    record["log"] = lines
    return record


def print_table(record: dict) -> None:
    print()
    print(f"{'op':<11} {'n':>8} {'GPU dev/s':>14} {'GPU host/s':>14} {'CPU/s':>12} {'CPU n':>6} {'x':>8}")
    for r in record["results"]:
        g = r.get("gpu_ops_per_s")
        h = r.get("gpu_host_ops_per_s")
        c = r.get("cpu_ops_per_s")
        sp = f"{g / c:8.0f}" if g and c else ""
        print(f"{r['op']:<11} {r['n']:>8} {g or 0:>14,.0f} {h or 0:>14,.0f} {c or 0:>12,.0f} "
              f"{r.get('cpu_n', 0):>6} {sp}")
    print()
    for op, s in record["summary"].items():
        if "target" in s or "target_s" in s:
            print(f"target {op}: {s}")


def plot(record: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        print(f"matplotlib not available ({exc}); skipping the plot")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, op in enumerate(OPS):
        rows = [r for r in record["results"] if r["op"] == op]
        xs = [r["n"] for r in rows]
        col = f"C{i}"
        if any("gpu_ops_per_s" in r for r in rows):
            ax.plot(xs, [r.get("gpu_ops_per_s", np.nan) for r in rows], "-o", color=col,
                    label=f"{op} GPU")
        ax.plot(xs, [r.get("cpu_ops_per_s", np.nan) for r in rows], "--x", color=col,
                label=f"{op} CPU")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("operations / s")
    dev = record.get("device", {}).get("name", "no GPU")
    ax.set_title(f"Paillier {record['key_bits']}-bit: GPU ({dev}) vs CPU ({record['machine']['cpu_count']} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point (also ``hefl bench gpu``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[10**3, 10**4, 10**5, 10**6])
    ap.add_argument("--max-size", type=int, default=10**6)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--cpu-cap", type=int, default=2000, help="max rows timed on the CPU")
    ap.add_argument("--cpu-cap-pow", type=int, default=500,
                    help="max rows timed on the CPU for mul_scalar")
    ap.add_argument("--gpu-cap-decrypt", type=int, default=10**6)
    ap.add_argument("--gpu-cap-pow", type=int, default=10**5,
                    help="max rows timed on the GPU for mul_scalar (full-size scalars)")
    ap.add_argument("--fb-window", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None, help="CPU workers (default: all cores)")
    ap.add_argument("--tune", action="store_true", help="also time lane counts of the core")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="stop starting new GPU sizes after this many seconds (0: no limit)")
    ap.add_argument("--tune-rows", type=int, default=1 << 17)
    ap.add_argument("--tune-fb", type=lambda s: [int(x) for x in s.split(",")], default=[8, 12, 16],
                    help="fixed-base windows to time with --tune")
    ap.add_argument("--cpu-impl", choices=["auto", "pool"], default="auto",
                    help="'pool': the process-pool fallback even where hefl.he._cpu imports")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_vs_cpu.json")
    ap.add_argument("--plot", type=Path, default=None, help="PNG path (default: next to --out)")
    args = ap.parse_args(argv)
    record = run(args)
    print_table(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, default=float) + "\n")
    print(f"record: {args.out}")
    plot(record, args.plot or args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
