"""HE benchmark: hefl's batched Paillier and OU (CPU) and CKKS against ``phe`` in the same run.

Usage::

    python benchmarks/he_bench.py [--quick] [--key-size 2048] [--no-ou] [--out FILE]
    hefl bench he [--quick]

Prints a table per scheme and one JSON line.  Rates are operations (ciphertexts) per
second; ``n_jobs=1`` and ``n_jobs=2`` use 1 and 2 threads of the GMP kernels.  For OU
with one job the same operations are also timed in the calling thread's CPU time
(``ou_cpu_n_jobs_1_thread_time``): on a shared, loaded machine that is the closer
estimate of what one core does, while the wall-clock figures are what a caller waits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

#: where _rate also records thread-CPU-time rates (None: wall clock only)
_CPU_RATES: dict | None = None
_CURRENT_OP: list[str] = [""]


def _rate(fn, count: int, repeat: int = 3) -> float:
    best, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        best.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    if _CPU_RATES is not None and _CURRENT_OP[0]:
        _CPU_RATES[_CURRENT_OP[0]] = count / max(float(np.median(cpu)), 1e-9)
    return count / float(np.median(best))


def bench_paillier(kit, sizes: dict, rng, cpu_rates: dict | None = None) -> dict:
    """Batched additive-HE operations of ``kit`` (Paillier or OU: the same kit interface).

    With ``cpu_rates`` given, the same timings in thread CPU time go there (meaningful for
    ``n_jobs=1``, where the kernels run in the calling thread).
    """
    global _CPU_RATES
    _CPU_RATES = cpu_rates
    try:
        return _bench_kit(kit, sizes, rng)
    finally:
        _CPU_RATES = None
        _CURRENT_OP[0] = ""


def _bench_kit(kit, sizes: dict, rng) -> dict:
    n = sizes["encrypt"]
    x = rng.uniform(-1, 1, n)
    out = {}
    _CURRENT_OP[0] = "encrypt"
    out["encrypt"] = _rate(lambda: kit.encrypt(x), n)
    _CURRENT_OP[0] = ""

    def pooled():
        kit.precompute(n)
        t, c = time.perf_counter(), time.thread_time()
        kit.encrypt(x)
        return time.perf_counter() - t, time.thread_time() - c

    runs = [pooled() for _ in range(3)]
    out["encrypt_pooled"] = n / float(np.median([r[0] for r in runs]))
    if _CPU_RATES is not None:
        _CPU_RATES["encrypt_pooled"] = n / max(float(np.median([r[1] for r in runs])), 1e-9)
    m = sizes["add"]
    a = kit.encrypt(rng.uniform(-1, 1, m)) if m <= n else None
    if a is None:
        kit.precompute(m)
        a = kit.encrypt(rng.uniform(-1, 1, m))
    b = a[::-1]
    _CURRENT_OP[0] = "add"
    out["add"] = _rate(lambda: a + b, m)
    k = rng.integers(1, 2**31, m)
    small = a[: sizes["mul"]]
    _CURRENT_OP[0] = "mul_plain_int32"
    out["mul_plain_int32"] = _rate(lambda: small * k[: sizes["mul"]], sizes["mul"])
    ids = rng.integers(0, 32, size=(m, 10))
    _CURRENT_OP[0] = "bucket_sum_adds"
    out["bucket_sum_adds"] = _rate(lambda: kit.bucket_sum(a, ids, 32), m * 10, repeat=1)
    d = a[: sizes["decrypt"]]
    _CURRENT_OP[0] = "decrypt"
    out["decrypt"] = _rate(lambda: kit.decrypt(d), sizes["decrypt"])
    _CURRENT_OP[0] = ""
    return out


def bench_phe(sizes: dict, key_size: int, rng) -> dict:
    import phe

    pk, sk = phe.generate_paillier_keypair(n_length=key_size)
    n = sizes["phe"]
    vals = rng.uniform(-1, 1, n).tolist()
    out = {"encrypt": _rate(lambda: [pk.encrypt(v) for v in vals], n, repeat=1)}
    enc = [pk.encrypt(v) for v in (vals * 2)[:50]]
    k = sizes["add"]
    out["add"] = _rate(lambda: [enc[i % 50] + enc[(i + 1) % 50] for i in range(k)], k, repeat=1)
    ints = rng.integers(1, 2**31, 50).tolist()
    out["mul_plain_int32"] = _rate(lambda: [enc[i % 50] * ints[i % 50] for i in range(200)], 200, repeat=1)
    out["decrypt"] = _rate(lambda: [sk.decrypt(e) for e in enc], len(enc), repeat=1)
    return out


def bench_ckks(n: int, rng) -> dict:
    from hefl.he import ckks

    kit = ckks.keygen()
    x, y = rng.normal(size=n), rng.normal(size=n)
    a = kit.encrypt(x)
    b = kit.encrypt(y)
    small = rng.normal(size=(min(n, 256), 8))
    av = kit.encrypt(x[: small.shape[0]])
    return {
        "encrypt": _rate(lambda: kit.encrypt(x), n),
        "add": _rate(lambda: a + b, n),
        "mul_plain": _rate(lambda: a * y, n),
        "dot": _rate(lambda: a.dot(y), n),
        "matmul_256x8_elems": _rate(lambda: av.dot(small), small.size, repeat=1),
        "decrypt": _rate(lambda: kit.decrypt(a), n),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batches (about 20 s)")
    ap.add_argument("--key-size", type=int, default=2048)
    ap.add_argument("--no-ckks", action="store_true")
    ap.add_argument("--no-ou", action="store_true", help="skip the Okamoto–Uchiyama kit")
    ap.add_argument("--out", help="also write the JSON record to this file")
    args = ap.parse_args(argv)

    from hefl.he import paillier
    from hefl.he._cpu import native_available

    rng = np.random.default_rng(0)
    sizes = (
        {"encrypt": 400, "add": 4000, "mul": 200, "decrypt": 256, "phe": 40}  # decrypt: 2 threads' chunks
        if args.quick
        else {"encrypt": 2000, "add": 20000, "mul": 1000, "decrypt": 400, "phe": 100}
    )
    allow = args.key_size < 2048
    results: dict = {"hefl_cpu_n_jobs_1": {}, "hefl_cpu_n_jobs_2": {}}
    kit1 = paillier.keygen(args.key_size, backend="cpu", n_jobs=1, allow_insecure=allow)
    kit1.encrypt(np.zeros(1))  # build the fixed-base tables outside the timings
    results["hefl_cpu_n_jobs_1"] = bench_paillier(kit1, sizes, rng)
    kit2 = paillier.PaillierSecretKit(kit1._p, kit1._q, kit1.hs, backend="cpu", n_jobs=2)
    kit2.encrypt(np.zeros(1))
    results["hefl_cpu_n_jobs_2"] = bench_paillier(kit2, sizes, rng)
    results["phe"] = bench_phe(sizes, args.key_size, rng)
    ou_info = None
    if not args.no_ou:
        from hefl.he import ou

        # OU is an order of magnitude faster: larger batches keep the timings above the noise
        ou_sizes = {k: v * (5 if k in ("encrypt", "decrypt") else 1) for k, v in sizes.items()}
        ok1 = ou.keygen(args.key_size, backend="cpu", n_jobs=1, allow_insecure=allow)
        ok1.encrypt(np.zeros(1))  # build the fixed-base tables outside the timings
        cpu1: dict = {}
        results["ou_cpu_n_jobs_1"] = bench_paillier(ok1, ou_sizes, rng, cpu_rates=cpu1)
        results["ou_cpu_n_jobs_1_thread_time"] = cpu1
        ok2 = ou.OUSecretKit(ok1._p, ok1._q, ok1._t, ok1.G, ok1.H, r_bits=ok1.r_bits, backend="cpu", n_jobs=2)
        ok2.encrypt(np.zeros(1))
        results["ou_cpu_n_jobs_2"] = bench_paillier(ok2, ou_sizes, rng)
        ou_info = {"cipher_bytes": ok1.cipher_width, "paillier_cipher_bytes": kit1.cipher_width,
                   "plaintext_bits": ok1.plaintext_bits, "p_bits": ok1.p_bits, "r_bits": ok1.r_bits,
                   "t_bits": ok1._t.bit_length(), "sizes": ou_sizes}
        del ok1, ok2
    if not args.no_ckks:
        results["ckks_elements"] = bench_ckks(4096 * (1 if args.quick else 4), rng)

    h1, h2, ph = results["hefl_cpu_n_jobs_1"], results["hefl_cpu_n_jobs_2"], results["phe"]
    ratios = {
        "encrypt_vs_phe": h1["encrypt"] / ph["encrypt"],
        "add_vs_phe": h1["add"] / ph["add"],
        "decrypt_vs_phe": h1["decrypt"] / ph["decrypt"],
        "encrypt_2_vs_1_jobs": h2["encrypt"] / h1["encrypt"],
        "decrypt_2_vs_1_jobs": h2["decrypt"] / h1["decrypt"],
    }
    if ou_info is not None:
        o1, o2 = results["ou_cpu_n_jobs_1"], results["ou_cpu_n_jobs_2"]
        ratios.update({
            "ou_encrypt_vs_paillier": o1["encrypt"] / h1["encrypt"],
            "ou_add_vs_paillier": o1["add"] / h1["add"],
            "ou_decrypt_vs_paillier": o1["decrypt"] / h1["decrypt"],
            "ou_encrypt_vs_phe": o1["encrypt"] / ph["encrypt"],
            "ou_decrypt_vs_phe": o1["decrypt"] / ph["decrypt"],
            "ou_encrypt_2_vs_1_jobs": o2["encrypt"] / o1["encrypt"],
            "ou_decrypt_2_vs_1_jobs": o2["decrypt"] / o1["decrypt"],
        })
    targets = {
        "encrypt": 2000, "encrypt_pooled": 100_000, "add": 150_000, "bucket_sum_adds": 150_000, "decrypt": 380,
    }
    targets_ou = {"encrypt": 20_000, "add": 400_000, "decrypt": 4_000}
    record = {
        "benchmark": "he", "key_size": args.key_size, "quick": args.quick, "native_kernels": native_available(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0]},
        "results": results, "ratios": ratios, "targets_one_core": targets,
    }
    if ou_info is not None:
        record["targets_ou_one_core"] = targets_ou
        record["ou"] = ou_info
    print(f"\nPaillier-{args.key_size}, ops/s (median of 3 where repeated)")
    print(f"{'operation':<18}{'hefl 1 job':>14}{'hefl 2 jobs':>14}{'phe':>12}{'target':>10}")
    for op in ["encrypt", "encrypt_pooled", "add", "mul_plain_int32", "bucket_sum_adds", "decrypt"]:
        phv = ph.get(op)
        print(f"{op:<18}{h1[op]:>14,.0f}{h2[op]:>14,.0f}{(f'{phv:,.0f}' if phv else '-'):>12}"
              f"{(f'{targets[op]:,}' if op in targets else '-'):>10}")
    if ou_info is not None:
        o1, o2, oc = results["ou_cpu_n_jobs_1"], results["ou_cpu_n_jobs_2"], results["ou_cpu_n_jobs_1_thread_time"]
        print(f"\nOU-{args.key_size} (n = p²q, {ou_info['cipher_bytes']}-byte ciphertexts vs Paillier's "
              f"{ou_info['paillier_cipher_bytes']}; {ou_info['plaintext_bits']}-bit plaintexts), ops/s")
        print(f"{'operation':<18}{'OU 1 job':>12}{'OU 2 jobs':>12}{'OU 1 job CPU':>14}{'Paillier 1':>12}"
              f"{'phe':>10}{'target':>10}")
        for op in ["encrypt", "encrypt_pooled", "add", "mul_plain_int32", "bucket_sum_adds", "decrypt"]:
            phv = ph.get(op)
            print(f"{op:<18}{o1[op]:>12,.0f}{o2[op]:>12,.0f}{oc.get(op, float('nan')):>14,.0f}{h1[op]:>12,.0f}"
                  f"{(f'{phv:,.0f}' if phv else '-'):>10}{(f'{targets_ou[op]:,}' if op in targets_ou else '-'):>10}")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if "ckks_elements" in results:
        print("CKKS elements/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in results["ckks_elements"].items()))
    line = json.dumps(record, sort_keys=True)
    print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(line + "\n")
    return record


if __name__ == "__main__":
    main()
