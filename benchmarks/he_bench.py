"""HE benchmark: hefl's batched Paillier (CPU) and CKKS against ``phe`` in the same run.

Usage::

    python benchmarks/he_bench.py [--quick] [--key-size 2048] [--out FILE]
    hefl bench he [--quick]

Prints a table and one JSON line.  Rates are operations (ciphertexts) per second;
``n_jobs=1`` and ``n_jobs=2`` use 1 and 2 threads of the GMP kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def _rate(fn, count: int, repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return count / float(np.median(best))


def bench_paillier(kit, sizes: dict, rng) -> dict:
    n = sizes["encrypt"]
    x = rng.uniform(-1, 1, n)
    out = {}
    out["encrypt"] = _rate(lambda: kit.encrypt(x), n)

    def pooled():
        kit.precompute(n)
        t = time.perf_counter()
        kit.encrypt(x)
        return time.perf_counter() - t

    out["encrypt_pooled"] = n / float(np.median([pooled() for _ in range(3)]))
    m = sizes["add"]
    a = kit.encrypt(rng.uniform(-1, 1, m)) if m <= n else None
    if a is None:
        kit.precompute(m)
        a = kit.encrypt(rng.uniform(-1, 1, m))
    b = a[::-1]
    out["add"] = _rate(lambda: a + b, m)
    k = rng.integers(1, 2**31, m)
    small = a[: sizes["mul"]]
    out["mul_plain_int32"] = _rate(lambda: small * k[: sizes["mul"]], sizes["mul"])
    ids = rng.integers(0, 32, size=(m, 10))
    out["bucket_sum_adds"] = _rate(lambda: kit.bucket_sum(a, ids, 32), m * 10, repeat=1)
    d = a[: sizes["decrypt"]]
    out["decrypt"] = _rate(lambda: kit.decrypt(d), sizes["decrypt"])
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
    ap.add_argument("--out", help="also write the JSON record to this file")
    args = ap.parse_args(argv)

    from hefl.he import paillier
    from hefl.he._cpu import native_available

    rng = np.random.default_rng(0)
    sizes = (
        {"encrypt": 400, "add": 4000, "mul": 200, "decrypt": 100, "phe": 40}
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
    targets = {
        "encrypt": 2000, "encrypt_pooled": 100_000, "add": 150_000, "bucket_sum_adds": 150_000, "decrypt": 380,
    }
    record = {
        "benchmark": "he", "key_size": args.key_size, "quick": args.quick, "native_kernels": native_available(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0]},
        "results": results, "ratios": ratios, "targets_one_core": targets,
    }
    print(f"\nPaillier-{args.key_size}, ops/s (median of 3 where repeated)")
    print(f"{'operation':<18}{'hefl 1 job':>14}{'hefl 2 jobs':>14}{'phe':>12}{'target':>10}")
    for op in ["encrypt", "encrypt_pooled", "add", "mul_plain_int32", "bucket_sum_adds", "decrypt"]:
        phv = ph.get(op)
        print(f"{op:<18}{h1[op]:>14,.0f}{h2[op]:>14,.0f}{(f'{phv:,.0f}' if phv else '-'):>12}"
              f"{(f'{targets[op]:,}' if op in targets else '-'):>10}")
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
