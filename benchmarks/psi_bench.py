"""PSI benchmark: two parties on this machine, N IDs each, 50% overlap.

For each size it runs ``hefl.psi.intersect`` for two parties as two processes over
loopback ZeroMQ (``hefl.federation.run_local``) and reports the wall time, each party's
peak memory and CPU time, and -- measured in the same run, right after each size -- the
raw X25519 rate of one core, so the figure that counts is a ratio:

    efficiency = ideal / wall,   ideal = 4·N exchanges / (cores used · raw rate)

(2-party ECDH-PSI costs 2 X25519 multiplications per ID per party; the two parties run
at the same time on two cores). Two raw rates are measured: ``raw`` -- one X25519 on a
fresh 32-byte input, including building the public-key object and hashing the input
(the per-ID work any PSI must do through ``cryptography``; the acceptance check's
definition) -- and ``raw_exchange`` -- ``exchange()`` alone on a prebuilt key object,
i.e. the bare curve speed; their ratio is ``cryptography``'s per-call overhead.

Usage::

    python benchmarks/psi_bench.py                       # 10k, 100k, 1M
    python benchmarks/psi_bench.py --sizes 10000 100000 --json-out result.json

Prints a table and, last, one JSON line (machine, versions, parameters, figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

__all__ = ["main", "raw_x25519_rates", "run_size"]


def _peak_rss_reset() -> None:
    try:  # Linux: reset VmHWM so the peak counts this run only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _party(start: int, n: int, kwargs: dict[str, Any]) -> Any:
    def fn(ctx: Any) -> dict[str, Any]:
        from hefl import psi

        _peak_rss_reset()
        ids = [f"user-{i}" for i in range(start, start + n)]
        c0, w0 = time.process_time(), time.perf_counter()
        rows = psi.intersect(ctx, ids, **kwargs)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        digest = hashlib.sha256("\n".join(ids[i] for i in rows).encode()).hexdigest()
        return {"shared": int(rows.size), "wall_s": wall, "cpu_s": cpu,
                "peak_rss_bytes": _peak_rss_bytes(), "order_digest": digest}

    return fn


def raw_x25519_rates(m: int = 20000, repeats: int = 3) -> dict[str, float]:
    """Single-core X25519 rates (operations/s), median of ``repeats``.

    Returns
    -------
    dict
        ``raw``: hash a counter, build the public key object, exchange (per-ID cost
        through ``cryptography``); ``raw_exchange``: ``exchange`` on prebuilt key objects;
        ``psi_blind`` / ``psi_mult``: hefl's own batch kernels (hash + blind an ID;
        re-blind a received point), measured interleaved with the raw loops.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from hefl.psi._curve import blind_ids, mult_points, new_key

    sk = X25519PrivateKey.generate()
    fpb = X25519PublicKey.from_public_bytes
    pks = [fpb(hashlib.sha256(str(i).encode()).digest()) for i in range(m)]
    key = new_key()
    ids = [f"user-{i}".encode() for i in range(m)]
    pts = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(m))
    full, bare, blind, mult = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        blind_ids(key, ids)
        blind.append(m / (time.perf_counter() - t))
        t = time.perf_counter()
        mult_points(key, pts)
        mult.append(m / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(m):
            sk.exchange(fpb(hashlib.sha256(str(i).encode()).digest()))
        full.append(m / (time.perf_counter() - t))
        t = time.perf_counter()
        for pk in pks:
            sk.exchange(pk)
        bare.append(m / (time.perf_counter() - t))
    return {"raw": statistics.median(full), "raw_exchange": statistics.median(bare),
            "psi_blind": statistics.median(blind), "psi_mult": statistics.median(mult)}


def run_size(n: int, overlap: float, kwargs: dict[str, Any], raw_ops: int) -> dict[str, Any]:
    """Run one size and measure the raw rate right after it."""
    from hefl.federation import run_local

    shift = n - round(n * overlap)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t = time.perf_counter()
    res = run_local({"alice": _party(0, n, kwargs), "bob": _party(shift, n, kwargs)},
                    timeout=7200.0, recv_timeout=1800.0)
    wall = time.perf_counter() - t
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rates = raw_x25519_rates(raw_ops)
    expected = n - shift
    a, b = res["alice"], res["bob"]
    ok = a["shared"] == b["shared"] == expected and a["order_digest"] == b["order_digest"]
    cores = min(2, os.cpu_count() or 1)
    ideal = 4 * n / (cores * rates["raw"])
    ideal_bare = 4 * n / (cores * rates["raw_exchange"])
    return {
        "n_per_party": n, "overlap": overlap, "shared": a["shared"], "correct": ok,
        "wall_s": wall, "psi_wall_s": max(a["wall_s"], b["wall_s"]),
        "cpu_s": {"alice": a["cpu_s"], "bob": b["cpu_s"]},
        "peak_rss_bytes": {"alice": a["peak_rss_bytes"], "bob": b["peak_rss_bytes"]},
        "raw_ops_per_s": rates["raw"], "raw_exchange_ops_per_s": rates["raw_exchange"],
        "psi_blind_ops_per_s": rates["psi_blind"], "psi_mult_ops_per_s": rates["psi_mult"],
        "ideal_s": ideal, "efficiency": ideal / wall,
        "efficiency_vs_bare_exchange": ideal_bare / wall,
        "cpu_efficiency": 2 * n / rates["raw"] / max(a["cpu_s"], b["cpu_s"]),
        "loadavg_before": load0, "loadavg_after": load1,
    }


def _machine() -> dict[str, Any]:
    import cryptography
    import numpy

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "cryptography": cryptography.__version__,
            "numpy": numpy.__version__, "platform": platform.platform()}


def _table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'N/party':>9} {'shared':>8} {'ok':>3} {'wall s':>8} {'ideal s':>8} {'eff':>5} "
            f"{'eff/bare':>8} {'cpu eff':>7} {'peak MB a/b':>13} {'raw/s':>7} {'bare/s':>7} "
            f"{'blind/s':>7} {'mult/s':>7} {'load':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        mem = r["peak_rss_bytes"]
        lines.append(
            f"{r['n_per_party']:>9} {r['shared']:>8} {'y' if r['correct'] else 'N':>3} "
            f"{r['wall_s']:>8.1f} {r['ideal_s']:>8.1f} {r['efficiency']:>5.2f} "
            f"{r['efficiency_vs_bare_exchange']:>8.2f} {r['cpu_efficiency']:>7.2f} "
            f"{mem['alice'] / 2**20:>6.0f}/{mem['bob'] / 2**20:<6.0f} "
            f"{r['raw_ops_per_s']:>7.0f} {r['raw_exchange_ops_per_s']:>7.0f} "
            f"{r['psi_blind_ops_per_s']:>7.0f} {r['psi_mult_ops_per_s']:>7.0f} "
            f"{max(r['loadavg_before'], r['loadavg_after']):>5.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and one JSON line. Returns 0 if all results are correct."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--n-jobs", type=int, default=1, help="per party (default 1: 2 parties, 2 cores)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--raw-ops", type=int, default=20000, help="X25519 ops per raw-rate sample")
    p.add_argument("--json-out", default=None, help="also write the JSON record to this file")
    args = p.parse_args(argv)
    kwargs = {"n_jobs": args.n_jobs, "batch_size": args.batch_size}
    rows = []
    for n in args.sizes:
        rows.append(run_size(n, args.overlap, kwargs, args.raw_ops))
        print(f"[psi_bench] N={n}: {rows[-1]['wall_s']:.1f} s, efficiency {rows[-1]['efficiency']:.2f}",
              file=sys.stderr, flush=True)
    print("hefl PSI benchmark: 2 parties (processes, loopback ZeroMQ), ECDH X25519, "
          f"{args.overlap:.0%} overlap, n_jobs={args.n_jobs} per party, batch {args.batch_size}")
    print("eff = (4N / (2 cores x raw)) / wall;  eff/bare uses the bare exchange() rate; "
          "cpu eff = (2N / raw) / party CPU time; blind/s, mult/s: hefl's kernels, 1 core")
    print(_table(rows))
    record = {"bench": "psi", "machine": _machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "params": {"sizes": args.sizes, "overlap": args.overlap, **kwargs, "parties": 2},
              "results": rows}
    line = json.dumps(record, sort_keys=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
