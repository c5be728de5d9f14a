"""``GpuPaillierBackend``: the Paillier backend on a CUDA GPU through CuPy.

Host API (the :class:`~hefl.he._backend.PaillierBackend` contract): numpy ``uint64``
``(N, L)`` limb arrays in and out, plain (non-Montgomery) values, the same semantics as
the CPU backend.  The arrays are viewed as ``uint32`` ``(N, 2L)`` without copying and
moved to the device in one transfer each way; nothing loops over ciphertexts in Python.

Device API (methods ending in ``_device``): ``cupy`` ``uint32`` ``(N, 2*Lc)`` arrays that
stay on the GPU between operations, ciphertexts in *Montgomery form* (``c * R mod n^2``,
``R = 2^(32*2*Lc)``) so that a homomorphic addition is one Montgomery multiplication.
:meth:`~GpuPaillierBackend.to_device` / :meth:`~GpuPaillierBackend.from_device` convert.

Kernels (``paillier.cu``, ``crt.cu``, core in ``mont.cuh``) are compiled with NVRTC by
``cupy.RawModule`` on first use, once per (limb count, lanes per number) and process;
CuPy caches the binaries on disk (``CUPY_CACHE_DIR``, default ``~/.cupy/kernel_cache``).
A first compile of the 2048-bit modules takes seconds each: :meth:`GpuPaillierBackend.warm_up`
(and ``hefl gpu warmup``) does it up front rather than inside the first operation.

Security: the DJN exponents alpha come from ``os.urandom`` (the host CSPRNG), one fresh
``alpha_bits``-bit exponent per ciphertext; nothing on the device generates randomness.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hefl.errors import BackendUnavailableError
from hefl.gpu import _consts as C
from hefl.he._backend import PaillierBackend, PaillierParams

__all__ = ["DEFAULT_FB_WINDOW", "DEFAULT_TPI", "GpuPaillierBackend"]

log = logging.getLogger("hefl.gpu")

_SRC_DIR = Path(__file__).resolve().parent
_BLOCK = 128  # threads per block: 4 warps, a multiple of every group size
#: lanes per number for the n^2 kernels and for the CRT kernels (p^2, n)
DEFAULT_TPI = (8, 8)
#: window of the fixed-base table for the DJN obfuscator (table has nwin * 2^w entries)
DEFAULT_FB_WINDOW = 12
_MAX_PARTIAL_BYTES = 512 << 20  # cap on the histogram's per-chunk partial buckets
_REDUCE_SPAN = 16
_CHUNK = 1 << 18  # rows per launch where host randomness is drawn per launch
_RAND_BLOCK = 1 << 20  # bytes of os.urandom per worker call
# compress_slots' cost model, 2048-bit keys, from the H200 record
# (benchmarks/results/gpu_vs_cpu_h200.*): a dependent squaring mod n^2 ~23 us (multiply by
# a full-size scalar: 1000 in 57 ms; SecureBoost's compression: ~44 ms per level for
# 18 * 107 squarings), a decryption launch >= 8 ms (1000 in 8 ms), 215,000 decryptions/s;
# a 1 Gbit/s link between the parties.
_SQUARE_LATENCY_S = 23e-6
_DECRYPT_LATENCY_S = 8e-3
_DECRYPT_RATE = 2.15e5
_LINK_S_PER_BYTE = 8e-9
_RAND_POOL: ThreadPoolExecutor | None = None

_MODULES: dict[tuple, Any] = {}


def _cupy():
    try:
        import cupy
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend='gpu' needs CuPy (pip install 'hefl[gpu]'): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailableError("backend='gpu': CUDA reports no device")
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend='gpu': no usable CUDA device ({type(exc).__name__}: {exc})"
        ) from exc
    return cupy


def kernel_source(name: str) -> str:
    """Source of ``name`` (``paillier.cu`` / ``crt.cu``) with ``mont.cuh`` inlined.

    Inlining (rather than ``-I``) makes the text self-contained, so CuPy's on-disk cache
    key covers the header too.
    """
    header = (_SRC_DIR / "mont.cuh").read_text().replace("#pragma once", "")
    src = (_SRC_DIR / name).read_text()
    return src.replace('#include "mont.cuh"', header)


def _module(name: str, nl: int, tpi: int, pow_w: int = 5):
    key = (name, nl, tpi, pow_w)
    mod = _MODULES.get(key)
    if mod is None:
        cp = _cupy()
        # no -std: NVRTC's default dialect (C++17) suffices, and CuPy adds its own options
        opts = (
            f"-DHEFL_NL={nl}",
            f"-DHEFL_TPI={tpi}",
            f"-DHEFL_POW_W={pow_w}",
        )
        mod = cp.RawModule(code=kernel_source(name), options=opts)
        compile_now = getattr(mod, "compile", None)  # CuPy >= 10; else on first get_function
        if compile_now is not None:
            compile_now()  # NVRTC, or CuPy's on-disk cache: now, not in the first launch
        _MODULES[key] = mod
    return mod


_RAND_LOCK = threading.Lock()


def urandom_words(count: int, words: int, bits: int) -> np.ndarray:
    """(count, words) uint32 of OS CSPRNG output, each row masked to ``bits`` bits.

    Large requests are split over a thread pool: ``os.urandom`` releases the GIL and the
    kernel's CSPRNG is per-CPU, so this scales with cores — one core's getrandom() can be
    slower than the GPU consumes exponents.
    """
    global _RAND_POOL
    nbytes = 4 * count * words
    if nbytes <= 2 * _RAND_BLOCK:
        raw = np.frombuffer(os.urandom(nbytes), dtype="<u4").copy()
    else:
        with _RAND_LOCK:
            if _RAND_POOL is None:
                _RAND_POOL = ThreadPoolExecutor(
                    max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="hefl-rand"
                )
        buf = np.empty(nbytes, dtype=np.uint8)

        def fill(lo: int) -> None:
            hi = min(nbytes, lo + _RAND_BLOCK)
            buf[lo:hi] = np.frombuffer(os.urandom(hi - lo), dtype=np.uint8)

        list(_RAND_POOL.map(fill, range(0, nbytes, _RAND_BLOCK)))
        raw = buf.view("<u4")
    raw = raw.reshape(count, words)
    top = bits - 32 * (words - 1)
    if top < 32:
        raw[:, -1] &= np.uint32((1 << top) - 1)
    return raw


_TPI_CHOICES = (1, 2, 4, 8, 16, 32)


def _env_tpi() -> tuple[int, int]:
    """Lanes per number from ``HEFL_GPU_TPI`` ("8" or "8,4": n^2 kernels, CRT kernels)."""
    raw = os.environ.get("HEFL_GPU_TPI", "").strip()
    if not raw:
        return DEFAULT_TPI
    parts = [int(x) for x in raw.split(",")]
    vals = (parts[0], parts[1] if len(parts) > 1 else parts[0])
    for v in vals:
        if v not in _TPI_CHOICES:
            raise ValueError(f"HEFL_GPU_TPI must be powers of two <= 32, got {raw!r}")
    return vals


def _pick_tpi(nl: int, want: int) -> int:
    t = want
    while t > 1 and nl % t:
        t //= 2
    return t


def _as_u32_rows(arr: np.ndarray, l64: int, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(arr, dtype="<u8")
    if arr.ndim != 2 or arr.shape[1] != l64:
        raise ValueError(f"{what}: expected shape (N, {l64}) uint64 limbs, got {arr.shape}")
    return arr.view("<u4")


def _max_bits(rows) -> int:
    """Largest bit length over the rows of a (N, W) uint32 array (numpy or cupy)."""
    if rows.shape[0] == 0:
        return 0
    xp = np if isinstance(rows, np.ndarray) else _cupy()
    nz = rows != 0
    any_nz = nz.any(axis=0)
    idx = int(xp.flatnonzero(any_nz)[-1]) if bool(any_nz.any()) else -1
    if idx < 0:
        return 0
    return 32 * idx + int(rows[:, idx].max()).bit_length()


class GpuPaillierBackend(PaillierBackend):
    """Batched Paillier (g = n + 1, DJN obfuscators, CRT decryption) on a CUDA GPU.

    Parameters
    ----------
    params : PaillierParams
        The key; ``p`` and ``q`` are needed only for :meth:`decrypt`.
    n_jobs : int
        Ignored (kept for the common constructor signature).
    tpi : int, optional
        Lanes per number for the n^2 kernels (default 8: 16 limbs per lane at 2048 bits,
        or the first value of ``HEFL_GPU_TPI``).
    tpi_crt : int, optional
        Lanes per number for the CRT decryption kernels (default 8, or the second value of
        ``HEFL_GPU_TPI``); must divide the CRT limb count after rounding up.
    fb_window : int, optional
        Window of the fixed-base obfuscator table, 1..16 (default 12, or
        ``HEFL_GPU_FB_WINDOW``): ``ceil(alpha_bits / w)`` multiplications per obfuscator,
        a table of ``ceil(alpha_bits / w) * 2^w`` numbers (180 MB at w = 12, 2048 bits).
    device : int, optional
        CUDA device ordinal (default: CuPy's current device).

    Raises
    ------
    BackendUnavailableError
        Without CuPy or a CUDA device.
    """

    name = "gpu"

    def __init__(
        self,
        params: PaillierParams,
        n_jobs: int = 1,
        *,
        tpi: int | None = None,
        tpi_crt: int | None = None,
        fb_window: int | None = None,
        device: int | None = None,
    ):
        super().__init__(params, n_jobs)
        cp = _cupy()
        self._cp = cp
        self._device = cp.cuda.Device(device) if device is not None else cp.cuda.Device()
        n = params.n
        self._lc = params.limbs_c  # 64-bit limbs of ciphertexts
        self._ln = params.limbs_n
        self.nl = 2 * self._lc  # 32-bit limbs of ciphertext rows = kernel NL
        env_tpi = _env_tpi()
        for name, v in (("tpi", tpi), ("tpi_crt", tpi_crt)):
            if v is not None and v not in _TPI_CHOICES:
                raise ValueError(f"{name} must be one of {_TPI_CHOICES} (lanes per number), got {v!r}")
        self._table_lock = threading.Lock()
        self.tpi = _pick_tpi(self.nl, tpi or env_tpi[0])
        self._kc = C.n2_consts(n, self.nl)
        w = fb_window or int(os.environ.get("HEFL_GPU_FB_WINDOW", DEFAULT_FB_WINDOW))
        if not 1 <= w <= 16:
            raise ValueError(f"fb_window must be in 1..16, got {w}")
        self.fb_window = w
        self._alpha_words = (params.alpha_bits + 31) // 32
        self._fb_nwin = (params.alpha_bits + w - 1) // w
        self._fb_table = None
        with self._device:
            self._K = cp.asarray(self._kc.rows)
        self._crt: C.CrtConsts | None = None
        if params.p is not None and params.q is not None:
            p, q = params.p, params.q
            want = tpi_crt or env_tpi[1]
            nlh = max(C.limbs32(p * p), C.limbs32(q * q), C.limbs32(n))
            self.tpi_crt = want
            self.nl_crt = C.round_up(nlh, want)
            self._crt = C.crt_consts(n, p, q, self.nl_crt)
            with self._device:
                self._KP = cp.asarray(self._crt.kp)
                self._NP0S = cp.asarray(self._crt.np0s)
                self._KN = cp.asarray(self._crt.kn)
        try:
            self._sm_count = int(self._device.attributes["MultiProcessorCount"])
        except Exception:  # noqa: BLE001
            self._sm_count = 100

    @property
    def n_jobs(self) -> int:
        """Always 1: the kit's obfuscator pool runs one thread per device (kernel launches
        on one device serialise anyway, host randomness has its own workers); setting it,
        as CPU backends allow, changes nothing."""
        return 1

    @n_jobs.setter
    def n_jobs(self, value: int) -> None:
        pass

    # ------------------------------------------------------------------ plumbing
    def _fn(self, name: str, crt: bool = False, tpi: int | None = None):
        if crt:
            return _module("crt.cu", self.nl_crt, tpi or self.tpi_crt).get_function(name)
        return _module("paillier.cu", self.nl, tpi or self.tpi).get_function(name)

    def _wide_tpi(self, crt: bool = False) -> int:
        """The latency width: up to a warp of lanes per number (never under the default)."""
        tpi, nl = (self.tpi_crt, self.nl_crt) if crt else (self.tpi, self.nl)
        return max(tpi, _pick_tpi(nl, 32))

    def _latency_tpi(self, groups: int, crt: bool = False) -> int:
        """Lanes per number for a launch of ``groups`` numbers, each a long dependent
        chain of multiplications: while the launch fills little of the device, its time is
        one chain's latency, and more lanes per number (up to a warp) shorten every
        multiplication of it; the kernel's result does not depend on the width."""
        tpi = self.tpi_crt if crt else self.tpi
        wide = self._wide_tpi(crt)
        # the wide launch too must fill under a quarter of the device (2048 threads per SM),
        # else it competes for issue slots and the throughput width is the better one
        return wide if groups * wide * 4 <= self._sm_count * 2048 else tpi

    def _launch(self, fn, groups: int, tpi: int, args: tuple) -> None:
        if groups <= 0:
            return
        threads = groups * tpi
        grid = (threads + _BLOCK - 1) // _BLOCK
        fn((grid,), (_BLOCK,), args)

    def _krow(self, i: int):
        return self._K[i]

    def _empty(self, n: int, w: int | None = None):
        return self._cp.empty((n, w or self.nl), dtype=self._cp.uint32)

    def _rows32(self, x, what: str):
        """Host or device limb rows -> contiguous device uint32 rows (uint64 rows are viewed
        as twice as many uint32 limbs, never value-converted)."""
        cp = self._cp
        dt = np.dtype(getattr(x, "dtype", np.uint64))
        if dt == np.uint64:
            x = cp.ascontiguousarray(cp.asarray(x))
            return x.view(cp.uint32)
        if dt != np.uint32:
            raise ValueError(f"{what}: expected uint32 or uint64 limbs, got dtype {dt}")
        return cp.ascontiguousarray(cp.asarray(x))

    def _up_c(self, a: np.ndarray, what: str):
        return self._cp.asarray(_as_u32_rows(a, self._lc, what))

    def _down(self, d) -> np.ndarray:
        host = self._cp.asnumpy(d)
        return np.ascontiguousarray(host).view("<u8")

    def synchronize(self) -> None:
        """Wait for all queued kernels (for timing)."""
        self._device.synchronize()

    def _dev_rows(self, d, what: str = "ciphertexts"):
        """A caller's device rows as the kernels read them: contiguous (a raw kernel gets
        only the data pointer, so a strided view would be read as if it were contiguous),
        ``nl`` 32-bit limbs wide."""
        if getattr(d, "ndim", 0) != 2 or d.shape[1] != self.nl:
            raise ValueError(f"{what}: expected device rows of shape (N, {self.nl}) uint32, "
                             f"got {getattr(d, 'shape', None)}")
        return self._cp.ascontiguousarray(d)

    # -------------------------------------------------------------- conversions
    def _mul_const(self, d, row: int):
        """montmul(d, K[row]) for every row of d (to Montgomery form: R2; back: ONE)."""
        d = self._dev_rows(d)
        out = self._empty(d.shape[0])
        self._launch(
            self._fn("k_mul"),
            d.shape[0],
            self.tpi,
            (d, np.int64(self.nl), self._krow(row), np.int64(0), out, np.int64(d.shape[0]),
             self._K, np.uint32(self._kc.np0), np.int32(-1)),
        )
        return out

    def to_device(self, c: np.ndarray):
        """Host ciphertexts (N, Lc) uint64 -> device, Montgomery form (cupy (N, 2Lc) uint32)."""
        with self._device:
            return self._mul_const(self._up_c(c, "ciphertexts"), C.K_R2)

    def from_device(self, d) -> np.ndarray:
        """Device ciphertexts in Montgomery form -> host (N, Lc) uint64, plain."""
        with self._device:
            return self._down(self._mul_const(d, C.K_ONE))

    def to_mont_device(self, d):
        """Plain device rows -> Montgomery form."""
        with self._device:
            return self._mul_const(d, C.K_R2)

    def from_mont_device(self, d):
        """Montgomery-form device rows -> plain."""
        with self._device:
            return self._mul_const(d, C.K_ONE)

    # -------------------------------------------------------------- obfuscators
    def _table(self):
        """The fixed-base table T[w][d] = hs^(d 2^(wbits w)) R mod n^2, built once per key
        (under a lock: several threads may ask for it at once)."""
        if self._fb_table is not None:
            return self._fb_table
        with self._table_lock:
            if self._fb_table is None:
                self._fb_table = self._build_table()
        return self._fb_table

    def _build_table(self):
        cp = self._cp
        w, nwin, nl = self.fb_window, self._fb_nwin, self.nl
        width = 1 << w
        seeds = C.fixed_base_seeds(self.params.hs, self._kc.n2, self._kc.r, w, nwin)
        with self._device:
            table = cp.empty((nwin, width, nl), dtype=cp.uint32)
            table[:, 0, :] = self._K[C.K_R1]
            pos = [1 << k for k in range(w)]
            flat = [v for row in seeds for v in row]
            table[:, pos, :] = cp.asarray(C.ints_to_u32(flat, nl).reshape(nwin, w, nl))
            fn = self._fn("k_fb_table_step")
            half = 2
            while half < width:
                self._launch(
                    fn,
                    nwin * (half - 1),
                    self.tpi,
                    (table, np.int32(nwin), np.int32(w), np.int32(half), self._K,
                     np.uint32(self._kc.np0)),
                )
                half *= 2
            self._device.synchronize()  # complete before another thread's stream may use it
        log.debug("fixed-base table: %d windows x 2^%d entries, %.1f MB", nwin, w,
                  table.nbytes / 1e6)
        return table

    def _alphas(self, count: int):
        """``count`` fresh DJN exponents of alpha_bits bits from os.urandom, on the device."""
        return self._cp.asarray(urandom_words(count, self._alpha_words, self.params.alpha_bits))

    def obfuscators_device(self, count: int, montgomery: bool = True):
        """``count`` fresh obfuscators hs^alpha mod n^2 on the device."""
        with self._device:
            table = self._table()
            out = self._empty(count)
            fn = self._fn("k_fixed_base")
            # chunks, so that drawing the next chunk's exponents on the host overlaps the
            # kernel of this one (launches are asynchronous)
            for lo in range(0, count, _CHUNK):
                hi = min(count, lo + _CHUNK)
                self._launch(
                    fn,
                    hi - lo,
                    self.tpi,
                    (self._alphas(hi - lo), np.int32(self._alpha_words), np.int32(self._fb_nwin),
                     np.int32(self.fb_window), table, out[lo:hi], np.int64(hi - lo), self._K,
                     np.uint32(self._kc.np0), np.int32(0 if montgomery else 1)),
                )
            return out

    def obfuscators(self, count: int) -> np.ndarray:
        """``count`` fresh DJN obfuscators hs^alpha mod n^2 (plain), alpha from os.urandom."""
        with self._device:
            return self._down(self.obfuscators_device(int(count), montgomery=False))

    # -------------------------------------------------------------- encryption
    def _encrypt(self, m_u32, obf, fused: bool, k1: int, k0: int):
        cp = self._cp
        n = m_u32.shape[0]
        out = self._empty(n)
        fn = self._fn("k_encrypt")
        table = self._table() if fused else out  # (unused by the kernel when not fused)
        dummy = cp.empty((1, 1), dtype=cp.uint32)
        step = _CHUNK if fused else max(n, 1)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            alpha = self._alphas(hi - lo) if fused else dummy
            self._launch(
                fn,
                hi - lo,
                self.tpi,
                (m_u32[lo:hi], np.int32(m_u32.shape[1]), out[lo:hi] if fused else obf[lo:hi],
                 alpha, np.int32(self._alpha_words), np.int32(self._fb_nwin),
                 np.int32(self.fb_window), table, out[lo:hi], np.int64(hi - lo), self._K,
                 np.uint32(self._kc.np0), np.int32(k1), np.int32(k0),
                 np.int32(1 if fused else 0)),
            )
        return out

    def encrypt(self, m: np.ndarray, obf: np.ndarray) -> np.ndarray:
        """(1 + m n) obf mod n^2; m (N, Ln) in [0, n), obf (N, Lc) plain obfuscators."""
        m32 = _as_u32_rows(m, self._ln, "plaintexts")
        o32 = _as_u32_rows(obf, self._lc, "obfuscators")
        if m32.shape[0] != o32.shape[0]:
            raise ValueError(f"{m32.shape[0]} plaintexts but {o32.shape[0]} obfuscators")
        with self._device:
            cp = self._cp
            out = self._encrypt(cp.asarray(m32), cp.asarray(o32), False, C.K_NR2, C.K_R1)
            return self._down(out)

    def encrypt_fresh(self, m: np.ndarray) -> np.ndarray:
        """Encrypt with a fresh obfuscator per row, generated and applied in one kernel."""
        m32 = _as_u32_rows(m, self._ln, "plaintexts")
        with self._device:
            return self._down(self._encrypt(self._cp.asarray(m32), None, True, C.K_NR, C.K_ONE))

    def encrypt_device(self, m, montgomery: bool = True):
        """Fresh encryptions of host/device plaintext rows -> device ciphertexts.

        ``m``: (N, 2Ln) uint32 or (N, Ln) uint64 limbs, host (numpy) or device (cupy).

        Output in Montgomery form (default), ready for the other ``*_device`` methods.
        """
        with self._device:
            m_d = self._rows32(m, "plaintexts")
            if montgomery:
                return self._encrypt(m_d, None, True, C.K_NR2, C.K_R1)
            return self._encrypt(m_d, None, True, C.K_NR, C.K_ONE)

    # -------------------------------------------------------------- add, mul
    def _mul(self, a, b, post_row: int):
        n = a.shape[0]
        out = self._empty(n)
        self._launch(
            self._fn("k_mul"),
            n,
            self.tpi,
            (a, np.int64(self.nl), b, np.int64(self.nl), out, np.int64(n), self._K,
             np.uint32(self._kc.np0), np.int32(post_row)),
        )
        return out

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Homomorphic addition a b mod n^2 (two Montgomery products: a b R^-1, then * R^2)."""
        if np.shape(a) != np.shape(b):
            raise ValueError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")
        with self._device:
            ad, bd = self._up_c(a, "ciphertexts"), self._up_c(b, "ciphertexts")
            return self._down(self._mul(ad, bd, C.K_R2))

    def add_device(self, a, b):
        """Homomorphic addition of Montgomery-form device ciphertexts (one product)."""
        if a.shape != b.shape:
            raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
        with self._device:
            return self._mul(self._dev_rows(a), self._dev_rows(b), -1)

    def _pow(self, a, k32, in_mont: bool, out_mont: bool):
        n = a.shape[0]
        out = self._empty(n)
        bits = _max_bits(k32)
        self._launch(
            self._fn("k_pow"),
            n,
            self.tpi,
            (a, k32, np.int32(k32.shape[1]), np.int64(k32.shape[1]), np.int32(bits), out,
             np.int64(n), self._K, np.uint32(self._kc.np0), np.int32(int(in_mont)),
             np.int32(int(out_mont))),
        )
        return out

    def mul_scalar(self, a: np.ndarray, k: np.ndarray) -> np.ndarray:
        """a^k mod n^2 elementwise; k (N, Le) uint64 limbs, any width (usually Ln).

        The work scales with the largest bit length in k, so narrow scalars are cheap.
        """
        k = np.ascontiguousarray(k, dtype="<u8")
        if k.ndim != 2 or k.shape[1] < 1:
            raise ValueError(f"scalars: expected (N, Le) uint64 limbs, got shape {k.shape}")
        k32 = k.view("<u4")
        with self._device:
            ad = self._up_c(a, "ciphertexts")
            if ad.shape[0] != k32.shape[0]:
                raise ValueError(f"{ad.shape[0]} ciphertexts but {k32.shape[0]} scalars")
            return self._down(self._pow(ad, self._cp.asarray(k32), False, False))

    def mul_scalar_device(self, a, k):
        """a^k on Montgomery-form device ciphertexts; k uint32 (N, W) or uint64 rows."""
        with self._device:
            a = self._dev_rows(a)
            k32 = self._rows32(k, "scalars")
            if k32.shape[0] != a.shape[0]:
                raise ValueError(f"{a.shape[0]} ciphertexts but {k32.shape[0]} scalars")
            return self._pow(a, k32, True, True)

    # -------------------------------------------------------------- reductions
    def _reduce(self, d, n_seg: int, seg_len: int):
        """Product over runs of seg_len rows, n_seg runs (Montgomery) -> (n_seg, nl)."""
        fn = self._fn("k_reduce")
        while seg_len > 1:
            out_len = (seg_len + _REDUCE_SPAN - 1) // _REDUCE_SPAN
            out = self._empty(n_seg * out_len)
            self._launch(
                fn,
                n_seg * out_len,
                self.tpi,
                (d, np.int64(n_seg), np.int64(seg_len), np.int32(_REDUCE_SPAN),
                 np.int64(out_len), out, self._K, np.uint32(self._kc.np0)),
            )
            d, seg_len = out, out_len
        return d

    def sum_device(self, a):
        """Product of all Montgomery-form rows -> (1, nl) Montgomery form."""
        with self._device:
            if a.shape[0] == 0:
                return self._K[C.K_R1 : C.K_R1 + 1].copy()
            return self._reduce(self._dev_rows(a), 1, a.shape[0])

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Product of all rows mod n^2, shape (Lc,); 1 for an empty batch."""
        with self._device:
            ad = self._up_c(a, "ciphertexts")
            if ad.shape[0] == 0:
                out = np.zeros(self._lc, dtype=np.uint64)
                out[0] = 1
                return out
            return self.from_device(self.sum_device(self._mul_const(ad, C.K_R2)))[0]

    def _check_ids(self, ids, n_rows: int, n_buckets: int):
        cp = self._cp
        ids = cp.asarray(ids)
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"bucket ids must be integers, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids.reshape(-1, 1)
        if ids.ndim != 2 or ids.shape[0] != n_rows:
            raise ValueError(f"ids must be ({n_rows}, F) int32, got shape {ids.shape}")
        if ids.size:  # checked before narrowing to int32
            lo, hi = int(ids.min()), int(ids.max())
            if lo < -1 or hi >= n_buckets:
                raise ValueError(
                    f"bucket ids must be in [-1, {n_buckets}), got values in [{lo}, {hi}]"
                )
        return cp.ascontiguousarray(ids.astype(cp.int32, copy=False))

    def bucket_sum_device(self, a, ids, n_buckets: int):
        """Histogram of Montgomery-form device rows -> (F, n_buckets, nl) Montgomery form.

        ``ids`` (N, F) int32, host or device, values in [0, n_buckets) or -1 (skip).
        """
        cp = self._cp
        n_buckets = int(n_buckets)
        with self._device:
            a = self._dev_rows(a)
            n_rows = a.shape[0]
            ids = self._check_ids(ids, n_rows, n_buckets)
            n_feat = ids.shape[1]
            if n_feat == 0 or n_buckets == 0:
                return cp.empty((n_feat, n_buckets, self.nl), dtype=cp.uint32)
            fn = self._fn("k_bucket_partial")
            # chunks: enough groups to fill the GPU a few times over, partials capped
            resident = self._sm_count * (65536 // (max(fn.num_regs, 32) * 32)) * 32 // self.tpi
            n_chunks = max(1, -(-4 * resident // n_feat))
            row_bytes = self.nl * 4
            cap = max(1, _MAX_PARTIAL_BYTES // (n_feat * n_buckets * row_bytes))
            n_chunks = int(max(1, min(n_chunks, cap, n_rows)))
            chunk = -(-n_rows // n_chunks) if n_rows else 1
            n_chunks = max(1, -(-n_rows // chunk)) if n_rows else 1
            partial = cp.empty((n_feat, n_buckets, n_chunks, self.nl), dtype=cp.uint32)
            partial[...] = self._K[C.K_R1]
            self._launch(
                fn,
                n_feat * n_chunks,
                self.tpi,
                (a, ids, np.int64(n_rows), np.int32(n_feat), np.int32(n_buckets),
                 np.int32(n_chunks), np.int64(chunk), partial, self._K,
                 np.uint32(self._kc.np0)),
            )
            out = self._reduce(partial, n_feat * n_buckets, n_chunks)
            return out.reshape(n_feat, n_buckets, self.nl)

    def bucket_sum(self, a: np.ndarray, ids: np.ndarray, n_buckets: int) -> np.ndarray:
        """(F, n_buckets, Lc): per feature and bucket, the product of rows with that id."""
        with self._device:
            return self._histogram_down(self.bucket_sum_device(self.hold(a), ids, n_buckets))

    def hold(self, a: np.ndarray):
        """A device copy (Montgomery form) of host ciphertext rows, for :meth:`bucket_sum_held`."""
        with self._device:
            return self._mul_const(self._up_c(a, "ciphertexts"), C.K_R2)

    def bucket_sum_held(self, held, rows: np.ndarray, ids: np.ndarray, n_buckets: int) -> np.ndarray:
        """:meth:`bucket_sum` of the rows ``rows`` (int64, in range) of ``held`` (from
        :meth:`hold`), gathered on the device: nothing but the ids crosses the bus."""
        with self._device:
            sub = held[self._cp.asarray(rows)]
            return self._histogram_down(self.bucket_sum_device(sub, ids, n_buckets))

    def _histogram_down(self, h) -> np.ndarray:
        f, b = h.shape[0], h.shape[1]
        if f * b == 0:
            return np.zeros((f, b, self._lc), dtype=np.uint64)
        return self.from_device(h.reshape(f * b, self.nl)).reshape(f, b, self._lc)

    def compress_slots(self, n_values: int, width_bits: int, most: int) -> int:
        """Values per ciphertext (``1..most``) that make compressing ``n_values`` values
        (:meth:`shift_pack`) and decrypting the result quickest: a cost model, not a
        measurement.

        Compression is one chain of ``(slots - 1) * width_bits`` dependent squarings mod
        n^2 per output, all outputs in parallel: at SecureBoost's sizes its time is that
        chain's latency, which grows with ``slots``. Decrypting ``n_values / slots``
        ciphertexts takes a launch's latency until the batch fills the device, then falls
        with ``slots``; sending them over a 1 Gbit/s link falls with ``slots`` too.
        On a CPU both are throughput-bound and the most values per ciphertext always win.
        """
        scale = self.nl * 16 / 2048  # key bits / 2048
        square_s = _SQUARE_LATENCY_S * scale**2
        dec_floor_s = _DECRYPT_LATENCY_S * scale**3
        dec_rate = _DECRYPT_RATE / scale**3
        link_s = _LINK_S_PER_BYTE * self.nl * 4

        def cost(k: int) -> float:
            m = -(-max(1, int(n_values)) // k)
            return (k - 1) * width_bits * square_s + max(dec_floor_s, m / dec_rate) + m * link_s

        return min(range(1, max(1, int(most)) + 1), key=lambda k: (cost(k), -k))

    def shift_pack_device(self, a, slot_bits: int, slots: int):
        """Cipher compression on Montgomery-form rows: groups of ``slots`` consecutive rows
        (the last padded with encryptions of 0) become prod_j c_j^(2^(slot_bits j)), which
        decrypts to sum_j m_j 2^(slot_bits j).  -> (ceil(N / slots), nl), Montgomery form.
        """
        cp = self._cp
        slots, slot_bits = int(slots), int(slot_bits)
        if slots < 1 or slot_bits < 0:
            raise ValueError(f"bad packing: slots={slots}, slot_bits={slot_bits}")
        with self._device:
            n = a.shape[0]
            n_out = -(-n // slots)
            if n_out * slots != n:
                pad = cp.empty((n_out * slots - n, self.nl), dtype=cp.uint32)
                pad[...] = self._K[C.K_R1]
                a = cp.concatenate([a, pad])
            out = self._empty(n_out)
            tpi = self._latency_tpi(n_out)  # (slots - 1) * (slot_bits + 1) steps per group
            self._launch(
                self._fn("k_shift_pack", tpi=tpi),
                n_out,
                tpi,
                (cp.ascontiguousarray(a), np.int64(n_out), np.int32(slots),
                 np.int32(slot_bits), out, self._K, np.uint32(self._kc.np0)),
            )
            return out

    def shift_pack(self, a: np.ndarray, slot_bits: int, slots: int) -> np.ndarray:
        """Host version of :meth:`shift_pack_device` (plain in, plain out)."""
        with self._device:
            ad = self._mul_const(self._up_c(a, "ciphertexts"), C.K_R2)
            return self.from_device(self.shift_pack_device(ad, slot_bits, slots))

    # -------------------------------------------------------------- decryption
    def _decrypt(self, c32):
        if self._crt is None:
            raise ValueError("decryption needs the private key (p, q)")
        cp = self._cp
        n = c32.shape[0]
        mpq = cp.empty((2, n, self.nl_crt), dtype=cp.uint32)
        out = cp.zeros((n, 2 * self._ln), dtype=cp.uint32)
        if n == 0:
            return out
        tpi = self._latency_tpi(2 * n, crt=True)  # a modular exponentiation per group
        self._launch(
            self._fn("k_decrypt_half", crt=True, tpi=tpi),
            2 * n,
            tpi,
            (c32, np.int32(c32.shape[1]), np.int64(n), self._KP, self._NP0S,
             np.int32(self._crt.exp_bits[0]), np.int32(self._crt.exp_bits[1]), mpq),
        )
        self._launch(
            self._fn("k_crt", crt=True),
            n,
            self.tpi_crt,
            (mpq, np.int64(n), self._KN, np.uint32(self._crt.np0n), out,
             np.int32(2 * self._ln)),
        )
        return out

    def decrypt(self, c: np.ndarray) -> np.ndarray:
        """CRT decryption: (N, Lc) ciphertexts -> (N, Ln) plaintexts in [0, n)."""
        with self._device:
            return self._down(self._decrypt(self._up_c(c, "ciphertexts")))

    def decrypt_device(self, d, montgomery: bool = True):
        """Decrypt device ciphertexts (Montgomery form by default) -> device (N, 2Ln) uint32."""
        with self._device:
            plain = self._mul_const(d, C.K_ONE) if montgomery else d
            return self._decrypt(plain)

    def warm_up(self) -> dict[str, float]:
        """Load every kernel module this backend may launch, so that no operation pays
        for a compile: NVRTC the first time on a machine (seconds per module for 2048-bit
        keys), CuPy's on-disk cache afterwards, nothing once loaded in this process.

        Returns the seconds each module took in this call (next to nothing where already
        loaded), keyed ``"paillier.cu NL=128 TPI=8"``; the CRT modules only with the
        private key.
        """
        wanted = [("paillier.cu", self.nl, w) for w in sorted({self.tpi, self._wide_tpi()})]
        if self._crt is not None:
            wanted += [("crt.cu", self.nl_crt, w)
                       for w in sorted({self.tpi_crt, self._wide_tpi(crt=True)})]
        took = {}
        for name, nl, tpi in wanted:
            t = time.perf_counter()
            _module(name, nl, tpi)
            took[f"{name} NL={nl} TPI={tpi}"] = time.perf_counter() - t
        return took

    def kernel_info(self) -> dict[str, dict[str, int]]:
        """Registers and local memory per thread of each kernel (compiles them)."""
        names = ["k_mul", "k_fixed_base", "k_fb_table_step", "k_encrypt", "k_pow",
                 "k_bucket_partial", "k_reduce", "k_shift_pack"]
        info = {}
        for name in names + ["k_decrypt_half", "k_crt"]:
            if name.startswith(("k_decrypt", "k_crt")) and self._crt is None:
                continue
            fn = self._fn(name, crt=name in ("k_decrypt_half", "k_crt"))
            info[name] = {
                "regs": int(getattr(fn, "num_regs", -1)),
                "local_bytes": int(getattr(fn, "local_size_bytes", -1)),
            }
        return info

    def describe(self) -> dict[str, Any]:
        """Configuration of this backend (for benchmark records)."""
        return {
            "backend": self.name,
            "key_bits": self.params.n.bit_length(),
            "limbs32_n2": self.nl,
            "tpi": self.tpi,
            "limbs32_crt": getattr(self, "nl_crt", None),
            "tpi_crt": getattr(self, "tpi_crt", None),
            "fb_window": self.fb_window,
            "fb_windows": self._fb_nwin,
            "alpha_bits": self.params.alpha_bits,
        }
