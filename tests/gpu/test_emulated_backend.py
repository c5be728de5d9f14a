"""GpuPaillierBackend end to end on the CPU, through an emulated CuPy (tests/gpu/emu).

The kernels' CUDA source is compiled with g++ against a small emulation of warp
intrinsics (one thread per lane), and the real backend drives it through a stand-in for
CuPy.  This runs every backend operation — the kernel code and the Python glue around it
— against the Python-integer oracle on machines without a GPU.  Small keys only (the
emulation is slow); the same checks run on a real GPU with a 2048-bit key in
test_gpu_backend.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))

import _checks

from hefl.gpu.reference import keygen_params

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
    from hefl.gpu.backend import GpuPaillierBackend

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
