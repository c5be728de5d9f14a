"""GPU support: CuPy/CUDA kernels for batched Paillier arithmetic.

CuPy is imported lazily, so ``import hefl.gpu`` works everywhere; :func:`available`
answers whether a usable device is there (never raising), :func:`device_info` describes
it, and :func:`make_backend` returns a :class:`~hefl.gpu.backend.GpuPaillierBackend` or
raises :class:`~hefl.errors.BackendUnavailableError` saying why not.

Set ``HEFL_DISABLE_GPU=1`` to make :func:`available` report False (e.g. to force the CPU
path on a machine with a GPU).

Examples
--------
>>> import hefl.gpu
>>> isinstance(hefl.gpu.available(), bool)
True
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from hefl.errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from hefl.gpu.backend import GpuPaillierBackend
    from hefl.he._backend import PaillierParams

__all__ = ["available", "device_info", "make_backend", "prefetch", "require", "unavailable_reason"]

log = logging.getLogger("hefl.gpu")

_PROBE: tuple[bool, str] | None = None
_PREFETCH: threading.Thread | None = None
_PREFETCH_LOCK = threading.Lock()


def _probe() -> tuple[bool, str]:
    """(usable, reason-if-not); cached, because the CUDA probe costs a context check."""
    global _PROBE
    if _PROBE is not None:
        return _PROBE
    if os.environ.get("HEFL_DISABLE_GPU", "").strip() not in ("", "0"):
        _PROBE = (False, "disabled by HEFL_DISABLE_GPU")
        return _PROBE
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA install
        _PROBE = (False, f"CuPy is not installed or cannot load ({type(exc).__name__}: {exc})")
        return _PROBE
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - no driver, no device, ...
        _PROBE = (False, f"CUDA reports no usable device ({type(exc).__name__}: {exc})")
        return _PROBE
    if count < 1:
        _PROBE = (False, "CUDA reports no usable device (device count 0)")
        return _PROBE
    _PROBE = (True, "")
    return _PROBE


def available() -> bool:
    """True when CuPy imports and sees at least one CUDA device.  Never raises."""
    try:
        return _probe()[0]
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return False


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    try:
        return _probe()[1]
    except Exception as exc:  # noqa: BLE001
        return f"GPU probe failed: {exc!r}"


def require() -> None:
    """Raise :class:`BackendUnavailableError` unless a GPU is usable."""
    if not available():
        raise BackendUnavailableError(
            f"backend='gpu' needs CuPy and a CUDA device: {unavailable_reason()}"
        )


def device_info(device: int | None = None) -> dict[str, Any]:
    """Describe the GPU (or say why there is none).

    Returns
    -------
    dict
        ``available`` and ``reason`` always; with a device also ``name``,
        ``compute_capability``, ``total_memory_bytes``, ``multiprocessors``,
        ``device_count``, ``cupy_version``, ``cuda_runtime_version`` and
        ``cuda_driver_version``.
    """
    ok, reason = _probe()
    info: dict[str, Any] = {"available": ok, "reason": reason}
    if not ok:
        return info
    try:
        import cupy

        dev = cupy.cuda.Device(device) if device is not None else cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props.get("name", b"")
        info.update(
            device_id=dev.id,
            name=name.decode() if isinstance(name, bytes) else str(name),
            compute_capability=f"{props.get('major')}.{props.get('minor')}",
            total_memory_bytes=int(props.get("totalGlobalMem", 0)),
            multiprocessors=int(props.get("multiProcessorCount", 0)),
            l2_cache_bytes=int(props.get("l2CacheSize", 0)),
            device_count=int(cupy.cuda.runtime.getDeviceCount()),
            cupy_version=cupy.__version__,
            cuda_runtime_version=int(cupy.cuda.runtime.runtimeGetVersion()),
            cuda_driver_version=int(cupy.cuda.runtime.driverGetVersion()),
        )
    except Exception as exc:  # noqa: BLE001 - informational only
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def make_backend(params: PaillierParams, n_jobs: int = 1, **options: Any) -> GpuPaillierBackend:
    """A :class:`~hefl.gpu.backend.GpuPaillierBackend` for ``params``.

    Raises
    ------
    BackendUnavailableError
        When CuPy or a CUDA device is missing (the message says which).
    """
    require()
    from hefl.gpu.backend import GpuPaillierBackend

    return GpuPaillierBackend(params, n_jobs=n_jobs, **options)


def prefetch() -> threading.Thread:
    """Start CUDA in a background thread (CuPy's import, the driver, the device's context),
    so that a GPU backend created later in this process starts at once: e.g. while a
    party waits for the public key it will compute under. Once per process; never raises
    (without a GPU the thread just finds none). Returns the thread.

    Call it only in a process that will use the GPU: a process forked after CUDA has
    started cannot use CUDA.
    """
    global _PREFETCH
    with _PREFETCH_LOCK:
        if _PREFETCH is None:
            _PREFETCH = threading.Thread(target=_start_cuda, name="hefl-gpu-prefetch", daemon=True)
            _PREFETCH.start()
        return _PREFETCH


def _start_cuda() -> None:
    try:
        if available():
            import cupy

            cupy.empty(1, dtype=cupy.uint32)  # the first allocation creates the context
    except Exception as exc:  # noqa: BLE001 - the backend itself reports real errors
        log.debug("GPU prefetch: %s: %s", type(exc).__name__, exc)
