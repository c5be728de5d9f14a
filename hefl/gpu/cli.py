"""``hefl gpu``: what GPU hefl sees, and compiling its kernels ahead of the first job.

``hefl gpu info`` prints :func:`hefl.gpu.device_info` as JSON (exit 1 without a usable
GPU). ``hefl gpu warmup`` compiles the Paillier kernels for the given key sizes into
CuPy's on-disk cache (``CUPY_CACHE_DIR``, default ``~/.cupy/kernel_cache``), so that the
first training job on a new machine does not spend seconds per kernel module compiling
them; run it once when deploying, with the same ``HEFL_GPU_TPI`` as the jobs (if any).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hefl.errors import BackendUnavailableError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gpu`` sub-command (``info``, ``warmup``)."""
    p = subparsers.add_parser(
        "gpu", help="GPU information and kernel warm-up",
        description="'info' prints the GPU hefl would use (exit 1 without one); 'warmup' "
        "compiles the Paillier kernels into CuPy's on-disk cache (CUPY_CACHE_DIR), so that "
        "the first job on a new machine does not spend seconds per kernel module compiling.")
    sub = p.add_subparsers(dest="gpu_command", metavar="ACTION")
    info = sub.add_parser("info", help="print the GPU hefl would use, as JSON")
    info.set_defaults(func=_info)
    warm = sub.add_parser("warmup", help="compile the kernels into CuPy's on-disk cache")
    warm.add_argument("--key-size", type=_key_size, nargs="+", default=[2048], metavar="BITS",
                      help="Paillier key sizes to compile for (default: 2048)")
    warm.set_defaults(func=_warmup)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _key_size(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"key size {text!r} is not an integer") from None
    if not 256 <= bits <= 16384 or bits % 64:
        raise argparse.ArgumentTypeError(
            f"key size {bits} must be a multiple of 64 between 256 and 16384")
    return bits


def _info(args: argparse.Namespace) -> int:
    from hefl import gpu

    info = gpu.device_info()
    print(json.dumps(info, indent=1))
    return 0 if info["available"] else 1


def _warmup(args: argparse.Namespace) -> int:
    from hefl import gpu
    from hefl.gpu.reference import keygen_params

    cache = os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser("~/.cupy/kernel_cache")
    try:
        gpu.require()
        for bits in dict.fromkeys(args.key_size):
            t = time.perf_counter()
            params = keygen_params(bits)  # a throwaway key: the kernels depend on its size only
            took = gpu.make_backend(params).warm_up()
            print(f"{bits}-bit keys ({time.perf_counter() - t:.1f} s with a throwaway key):")
            for module, seconds in took.items():
                print(f"  {module:<28}{seconds:>8.2f} s")
    except BackendUnavailableError as exc:
        print(f"hefl gpu warmup: {exc}", file=sys.stderr)
        return 1
    print(f"kernels cached in {cache}")
    return 0
