"""Choosing a compute backend (``"auto"``, ``"cpu"``, ``"gpu"``)."""

from __future__ import annotations

import logging
import os

from hefl.errors import BackendUnavailableError, ConfigError

log = logging.getLogger("hefl.he")

_logged: set[str] = set()


def default_n_jobs() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_backend(backend: str) -> str:
    """``"auto"`` → ``"gpu"`` when ``hefl.gpu`` sees a device, else ``"cpu"`` (logged once)."""
    if backend not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"backend must be 'auto', 'cpu' or 'gpu', not {backend!r}")
    if backend == "cpu":
        return "cpu"
    try:
        from hefl.gpu import available

        has_gpu = bool(available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU
        has_gpu = False
    if backend == "gpu":
        if not has_gpu:
            raise BackendUnavailableError(
                "backend='gpu' needs CuPy and a visible CUDA device (pip install 'hefl[gpu]'); none found"
            )
        return "gpu"
    choice = "gpu" if has_gpu else "cpu"
    if choice not in _logged:
        _logged.add(choice)
        log.info("backend='auto' picked %s%s", choice, "" if has_gpu else " (no CUDA device / CuPy visible)")
    return choice
