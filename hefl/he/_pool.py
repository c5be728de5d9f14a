"""A pool of precomputed obfuscators, shared by the Paillier and OU kits.

Obfuscators do not depend on the message, so they can be computed ahead of time —
inline, or by background threads while the caller waits on a peer.  Each one is handed
out once; :meth:`ObfuscatorPool.cancel` drops what is left.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["ObfuscatorPool"]


class ObfuscatorPool:
    """Precomputed obfuscators (rows of a limb array), each taken at most once.

    Parameters
    ----------
    make : callable
        ``make(count, serial)`` returns ``count`` fresh obfuscators; ``serial=True`` asks
        for work on the calling thread only (the pool's own threads already run in parallel).
    name : str
        Name of the filler threads.
    """

    def __init__(self, make: Callable[[int, bool], np.ndarray], name: str = "hefl-obf-pool"):
        self._make = make
        self._name = name
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def fill(self, count: int, *, background: bool = False, low_priority: bool = False, jobs: int = 1) -> None:
        """Add ``count`` obfuscators: now, or with ``jobs`` background threads.

        ``low_priority=True`` lowers the filler threads' CPU priority (Linux ``nice`` 10), so
        they only soak up otherwise idle cores.
        """
        count = int(count)
        if not background:
            self._fill(count, False, False)
            return
        jobs = max(1, int(jobs))
        for i in range(jobs):
            share = count // jobs + (1 if i < count % jobs else 0)
            if share:
                t = threading.Thread(target=self._fill, args=(share, True, low_priority), daemon=True,
                                     name=self._name)
                t.start()
                self._threads.append(t)

    def _fill(self, count: int, serial: bool, low_priority: bool) -> None:
        if low_priority:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):  # pragma: no cover - not Linux / not permitted
                pass
        chunk = 512 if serial else 4096
        done = 0
        while done < count and not self._stop.is_set():
            k = min(chunk, count - done)
            obf = self._make(k, serial)
            with self._lock:
                self._chunks.append(obf)
            done += k

    def take(self, count: int) -> np.ndarray | None:
        """Up to ``count`` pooled obfuscators, or ``None`` when the pool is empty."""
        taken: list[np.ndarray] = []
        need = int(count)
        with self._lock:
            while need and self._chunks:
                head = self._chunks[0]
                if head.shape[0] <= need:
                    taken.append(self._chunks.pop(0))
                    need -= head.shape[0]
                else:
                    taken.append(head[:need])
                    self._chunks[0] = head[need:]
                    need = 0
        if not taken:
            return None
        return taken[0] if len(taken) == 1 else np.concatenate(taken)

    @property
    def size(self) -> int:
        with self._lock:
            return sum(c.shape[0] for c in self._chunks)

    def wait(self) -> None:
        """Wait for background fills to finish."""
        for t in self._threads:
            t.join()
        self._threads = [t for t in self._threads if t.is_alive()]

    def cancel(self) -> None:
        """Stop background fills after their current chunk and drop the pool."""
        self._stop.set()
        self.wait()
        with self._lock:
            self._chunks.clear()
        self._stop.clear()
