"""A stand-in for the part of CuPy that hefl.gpu.backend uses, running the kernels on the CPU.

Arrays are NumPy arrays; ``RawModule`` compiles the CUDA source with g++ against
``cuda_emu.h`` (lanes as threads, warp intrinsics through barriers, PTX carry chains in
C) into a shared library and launches kernels through ctypes.  Slow — for small keys in
tests only — but it runs the real kernel source and the real backend glue (argument
order and types, grid sizes, constant rows), which a GPU-less machine cannot otherwise.

Use :func:`install` (monkeypatches ``sys.modules["cupy"]``).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
_CACHE = Path(tempfile.gettempdir()) / "hefl_cupy_emu"
PARALLEL_GROUPS = 8

uint32 = np.uint32
int32 = np.int32
int64 = np.int64
uint64 = np.uint64
ndarray = np.ndarray
__version__ = "emulated"


def gxx() -> str | None:
    return shutil.which("g++")


def asarray(x, dtype=None):
    return np.asarray(x, dtype=dtype)


def ascontiguousarray(x, dtype=None):
    return np.ascontiguousarray(x, dtype=dtype)


def asnumpy(x):
    return np.array(x, copy=True)


empty = np.empty
empty_like = np.empty_like
zeros = np.zeros
concatenate = np.concatenate
flatnonzero = np.flatnonzero


class _Device:
    def __init__(self, device: int | None = None):
        self.id = 0 if device is None else int(device)
        self.attributes = {"MultiProcessorCount": 2}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:
        return 1

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"cupy_emu (CPU)", "major": 0, "minor": 0, "totalGlobalMem": 0,
                "multiProcessorCount": 2, "l2CacheSize": 0}

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def driverGetVersion():
        return 0


cuda = types.SimpleNamespace(Device=_Device, runtime=_Runtime)


class _Pool:
    def free_all_blocks(self) -> None:
        pass


def get_default_memory_pool() -> _Pool:
    return _Pool()


class _Kernel:
    num_regs = 96

    def __init__(self, lib, name: str):
        self._lib = lib
        self._ptr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        self.name = name

    def __call__(self, grid, block, args):
        vals = []
        keep = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: non-contiguous array argument")
                keep.append(a)
                vals.append(a.ctypes.data)
            elif isinstance(a, (np.integer, int)):
                vals.append(int(a) & 0xFFFFFFFFFFFFFFFF)
            else:
                raise TypeError(f"{self.name}: unsupported kernel argument {type(a)}")
        arr = (ctypes.c_ulonglong * len(vals))(*vals)
        rc = self._lib.emu_launch(ctypes.c_void_p(self._ptr), ctypes.c_uint(grid[0]),
                                  ctypes.c_uint(block[0]), ctypes.c_int(len(vals)), arr,
                                  ctypes.c_int(PARALLEL_GROUPS))
        if rc != 0:
            raise RuntimeError(f"emu_launch failed for {self.name}")


class RawModule:
    def __init__(self, code: str, options=(), **_):
        defs = [o for o in options if o.startswith("-D")]
        key = hashlib.sha256((code + "|".join(defs) + (HERE / "cuda_emu.h").read_text())
                             .encode()).hexdigest()[:16]
        _CACHE.mkdir(parents=True, exist_ok=True)
        lib = _CACHE / f"k_{key}.so"
        if not lib.exists():
            src = _CACHE / f"k_{key}.cpp"
            src.write_text(code)
            cmd = [gxx() or "g++", "-O2", "-std=c++20", "-shared", "-fPIC", "-pthread",
                   "-DHEFL_HOST_EMU", *defs, "-include", str(HERE / "cuda_emu.h"),
                   "-Wno-unknown-pragmas", str(src), "-o", str(lib) + ".tmp"]
            res = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"g++ failed:\n{res.stderr[-4000:]}")
            Path(str(lib) + ".tmp").rename(lib)
        self._lib = ctypes.CDLL(str(lib))
        self._lib.emu_launch.restype = ctypes.c_int

    def get_function(self, name: str) -> _Kernel:
        return _Kernel(self._lib, name)


def install(monkeypatch) -> None:
    """Make ``import cupy`` return this module and clear hefl.gpu's caches."""
    import hefl.gpu as hg
    import hefl.gpu.backend as hb

    monkeypatch.setitem(sys.modules, "cupy", sys.modules[__name__])
    monkeypatch.setattr(hg, "_PROBE", None)
    monkeypatch.setattr(hb, "_MODULES", {})
