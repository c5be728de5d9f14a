"""``hefl bench NAME``: run one of the repository's benchmarks (``benchmarks/NAME*.py``)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

_NAMES = {
    "he": "he_bench.py",
    "transport": "transport_bench.py",
    "psi": "psi_bench.py",
    "secureboost": "secureboost_bench.py",
    "gpu": "gpu_vs_cpu.py",
    "lr": "hetero_lr_bench.py",
    "load": "load_bench.py",
}


def _bench_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "benchmarks"


def _run(args: argparse.Namespace) -> int:
    path = _bench_dir() / _NAMES[args.name]
    if not path.exists():
        print(f"benchmark {args.name!r} not found at {path} (benchmarks ship with the source checkout)",
              file=sys.stderr)
        return 2
    sys.argv = [str(path), *args.bench_args]
    runpy.run_path(str(path), run_name="__main__")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark (he, transport, psi, secureboost, gpu, ...)",
                       description="Run a benchmark from the checkout's benchmarks/ folder; extra arguments "
                                   "go to the benchmark (e.g. hefl bench he --quick).")
    p.add_argument("name", choices=sorted(_NAMES))
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=_run)
