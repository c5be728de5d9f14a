"""The CUDA sources compile with nvcc for Hopper (sm_90); skipped where nvcc is absent.

Compiles the text that CuPy compiles (``kernel_source``: the .cu file with mont.cuh
inlined).  Full machine-code builds (ptxas, which checks the inline PTX) use a small limb
count to stay quick; the production 2048-bit shapes are compiled to PTX.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hefl.gpu.backend import kernel_source

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")

CASES = [
    # (file, NL, TPI, nvcc mode)
    ("paillier.cu", 32, 8, "-c"),
    ("crt.cu", 32, 4, "-c"),
    ("paillier.cu", 128, 8, "--ptx"),  # n^2 of a 2048-bit key
    ("paillier.cu", 32, 32, "-c"),  # a warp per number (latency-bound launches)
    ("paillier.cu", 128, 32, "--ptx"),  # ... for a 2048-bit key's n^2
    ("crt.cu", 32, 32, "-c"),
    ("crt.cu", 64, 32, "--ptx"),
    ("crt.cu", 64, 8, "--ptx"),  # p^2, q^2, n of a 2048-bit key
]


@pytest.mark.parametrize("name,nl,tpi,mode", CASES)
def test_cuda_source_compiles(tmp_path, name, nl, tpi, mode):
    src = tmp_path / name
    src.write_text(kernel_source(name))
    out = tmp_path / (name + (".o" if mode == "-c" else ".ptx"))
    cmd = [NVCC, "-arch=sm_90", mode, f"-DHEFL_NL={nl}", f"-DHEFL_TPI={tpi}",
           "-Werror=all-warnings", str(src), "-o", str(out)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    assert out.stat().st_size > 0
