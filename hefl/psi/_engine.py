"""Runs batches of X25519 work inline or spread over ``n_jobs`` worker processes."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from hefl.errors import ConfigError
from hefl.psi._curve import LowOrderPoint, blind_ids, mult_points

__all__ = ["Engine", "Job", "JobFailed", "resolve_n_jobs"]

#: ("blind", encoded IDs) hashes and multiplies; ("mult", concatenated points) multiplies.
Job = tuple[Literal["blind"], list[bytes]] | tuple[Literal["mult"], bytes]

_MIN_PIECE = 256  # below this, the pickling round trip costs more than it saves


class JobFailed(Exception):
    """Job ``job`` hit a low-order point at row ``row``."""

    def __init__(self, job: int, row: int) -> None:
        super().__init__(job, row)
        self.job = job
        self.row = row


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Turn an ``n_jobs`` setting into a number of processes.

    Parameters
    ----------
    n_jobs : int or None
        ``None`` or ``1``: work in the calling process. ``k > 1``: ``k`` worker processes.
        ``-1``: one per CPU core; ``-2``: all but one, and so on (joblib's convention).

    Returns
    -------
    int
        At least 1.
    """
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"n_jobs must be a non-zero integer or None, got {n_jobs!r}")
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


def _run_piece(kind: str, key: bytes, payload: list[bytes] | bytes) -> bytes:
    if kind == "blind":
        assert isinstance(payload, list)
        return blind_ids(key, payload)
    assert isinstance(payload, bytes)
    return mult_points(key, payload)


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: end with the party process, even when it is SIGKILLed (by the
    OOM killer, say) and nobody is left to shut the pool down (Linux; elsewhere the pool's
    own shutdown is all there is)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class Engine:
    """Computes blinding jobs with one secret key, inline or in a process pool.

    Parameters
    ----------
    key : bytes
        The party's secret scalar; it is handed to local worker processes only.
    n_jobs : int or None
        See :func:`resolve_n_jobs`. With one job the work runs in the calling process,
        which avoids any copying; with more, each call's jobs are cut into about
        ``n_jobs`` pieces that run in parallel.
    """

    def __init__(self, key: bytes, n_jobs: int | None = 1) -> None:
        self._key = key
        self.n_jobs = resolve_n_jobs(n_jobs)
        self._pool: ProcessPoolExecutor | None = None
        if self.n_jobs > 1:
            # "spawn", not fork: the caller holds transport threads (ZeroMQ), and forking a
            # threaded process can deadlock the child. The price: scripts need a main guard.
            self._pool = ProcessPoolExecutor(
                max_workers=self.n_jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent, initargs=(os.getpid(),),
            )

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Engine:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: list[Job]) -> list[bytes]:
        """Compute all ``jobs`` and return their outputs (32 bytes per row) in order.

        Raises
        ------
        JobFailed
            When a row is a low-order point (names the job and the row).
        """
        if self._pool is None:
            out = []
            for j, (kind, payload) in enumerate(jobs):
                try:
                    out.append(_run_piece(kind, self._key, payload))
                except LowOrderPoint as e:
                    raise JobFailed(j, e.index) from None
            return out
        rows = [len(p) if kind == "blind" else len(p) // 32 for kind, p in jobs]
        piece = max(_MIN_PIECE, math.ceil(sum(rows) / self.n_jobs))
        futures: list[list[tuple[int, Future[bytes]]]] = []
        for (kind, payload), n in zip(jobs, rows):
            parts = []
            for start in range(0, max(n, 1), piece):
                stop = min(n, start + piece)
                part = payload[start:stop] if kind == "blind" else payload[start * 32 : stop * 32]
                parts.append((start, self._pool.submit(_run_piece, kind, self._key, part)))
            futures.append(parts)
        out = []
        for j, parts in enumerate(futures):
            chunks = []
            for start, fut in parts:
                try:
                    chunks.append(fut.result())
                except LowOrderPoint as e:
                    raise JobFailed(j, start + e.index) from None
                except BrokenProcessPool as e:
                    raise RuntimeError(
                        f"PSI worker processes (n_jobs={self.n_jobs}) died or failed to start; "
                        "workers are spawned, so a script using n_jobs > 1 must guard its entry "
                        "point with `if __name__ == '__main__':`"
                    ) from e
            out.append(b"".join(chunks))
        return out
