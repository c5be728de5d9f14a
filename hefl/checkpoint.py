"""Training checkpoints: one party's state after each finished tree / epoch, on its own disk.

A job that runs for hours between organisations will sometimes lose a party (a reboot,
a network cut). Each party saves its own training state after every finished unit of
work (a SecureBoost tree, a hetero-LR epoch) under ``OUTPUT/<party>/checkpoints/train/``;
``hefl run JOB.yaml --resume`` then continues from the last unit *all* parties saved.

Storage and safety
------------------
* One file per checkpoint, ``ckpt-<step>.npz``: the arrays of the state plus a JSON
  document (``__meta__``, UTF-8 bytes). Loaded with ``allow_pickle=False``: a checkpoint
  is data, never code, like everything else hefl reads.
* Written atomically (:mod:`hefl._atomic`): a party killed mid-save leaves the previous
  checkpoint intact. The last ``keep`` checkpoints are kept because parties die at
  different moments: the active party may have saved tree 7 while a passive party only
  got to tree 6, and then both resume from 6.
* Each checkpoint records the training run's ``run_id`` (random, chosen by the party that
  leads the protocol and shared at the start) and a fingerprint of the party's own inputs
  (data, parameters). Resuming only uses checkpoints whose run id every party holds at
  the same step and whose fingerprint matches what the party holds now; anything else is
  ignored (and said so in the log), so a changed data file or parameter starts afresh.
* Nothing in a checkpoint leaves the party: the resume handshake exchanges only
  ``(run_id, step)`` pairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hefl._atomic import atomic_path, json_default
from hefl.errors import DataError, ProtocolError

# numpy reads each .npy header with ast.literal_eval, and CPython 3.11's AST validator
# keeps its recursion depth per interpreter: two threads parsing at once can fail with
# "SystemError: AST constructor recursion depth mismatch" (parties run as threads of one
# process did). One lock for every checkpoint read in this process.
_NPZ_LOCK = threading.Lock()

__all__ = ["Checkpointer", "fingerprint", "new_run_id", "parse_offer", "pick_common"]

log = logging.getLogger("hefl.checkpoint")

_NAME = re.compile(r"^ckpt-(\d{6,})\.npz$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_META = "__meta__"


def new_run_id() -> str:
    """A fresh random training-run id (128 bits, hex)."""
    return secrets.token_hex(16)


def fingerprint(*parts: Any) -> str:
    """SHA-256 over arrays (dtype, shape and bytes), strings, numbers and JSON-able values."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"nd:{a.dtype.str}:{a.shape}:".encode())
            h.update(a.tobytes())
        else:
            h.update(b"js:" + json.dumps(p, sort_keys=True, default=str).encode() + b";")
    return h.hexdigest()


class Checkpointer:
    """The checkpoints of one party's training, in ``directory``.

    Parameters
    ----------
    directory : path
        Created on the first save.
    keep : int
        How many of the newest checkpoints to keep (at least 2: see the module docstring).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = Path(directory)
        self.keep = max(2, int(keep))

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, keep={self.keep})"

    # ------------------------------------------------------------------ write
    def save(self, step: int, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> Path:
        """Save the state after ``step`` units (``meta`` JSON-able, ``arrays`` numeric)."""
        step = int(step)
        if step < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        arrays = dict(arrays or {})
        if _META in arrays:
            raise ValueError(f"array name {_META!r} is reserved")
        doc = json.dumps({**meta, "step": step}, default=json_default).encode("utf-8")
        arrays[_META] = np.frombuffer(doc, dtype=np.uint8)
        for k, a in arrays.items():
            if np.asarray(a).dtype == object:
                raise TypeError(f"checkpoint array {k!r} has dtype object: only numeric arrays are stored")
        path = self.directory / f"ckpt-{step:06d}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        self._prune()
        return path

    def clear(self) -> None:
        """Remove every checkpoint (a fresh training run starts)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def _prune(self) -> None:
        steps = self.steps()
        for s in steps[:-self.keep]:
            (self.directory / f"ckpt-{s:06d}.npz").unlink(missing_ok=True)

    # ------------------------------------------------------------------ read
    def steps(self) -> list[int]:
        """Steps with a checkpoint file, ascending."""
        if not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def load(self, step: int, meta_only: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)`` of the checkpoint after ``step`` units (``arrays`` empty with
        ``meta_only``: the arrays, e.g. a margin per row, are not read)."""
        path = self.directory / f"ckpt-{int(step):06d}.npz"
        with _NPZ_LOCK, np.load(path, allow_pickle=False) as z:
            names = [_META] if meta_only and _META in z.files else z.files
            arrays = {k: z[k] for k in names}
        raw = arrays.pop(_META, None)
        if raw is None or raw.dtype != np.uint8:
            raise ValueError(f"{path}: not a hefl checkpoint (no metadata)")
        return json.loads(raw.tobytes().decode("utf-8")), arrays

    def resume_state(self, fp: str, offers: Iterable[set[tuple[str, int]]],
                     unit: str = "step", keep: Callable[[dict], bool] | None = None,
                     ) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The leader's side of a resume: load the newest checkpoint this party (inputs
        fingerprint ``fp``) and every peer (their parsed ``offers``) hold, or ``None`` --
        said in the log -- when there is none and training starts from its first ``unit``.
        ``keep(meta)``: only checkpoints it accepts (e.g. not past a lowered tree count)."""
        at = pick_common(self.offers(fp, keep), offers)
        if at is None:
            log.warning("resume: no checkpoint that every party holds (this party has %ss %s): "
                        "training from the first %s", unit, self.steps() or "none", unit)
            return None
        meta, arrays = self.load(at[1])
        if meta.get("run_id") != at[0]:  # a newer save replaced it between offers() and now
            raise DataError(f"checkpoint {at[1]} changed while resuming")
        return meta, arrays

    def offers(self, fp: str | None = None, keep: Callable[[dict], bool] | None = None) -> list[tuple[str, int]]:
        """``(run_id, step)`` of every readable checkpoint (whose fingerprint is ``fp``, if given).

        Unreadable files (e.g. from an older hefl) are skipped with a warning.
        """
        out = []
        for s in self.steps():
            try:
                meta, _ = self.load(s, meta_only=True)
            except Exception as exc:  # noqa: BLE001 - a damaged file must not stop a resume from an older one
                log.warning("ignoring checkpoint %s: %s: %s", self.directory / f"ckpt-{s:06d}.npz",
                            type(exc).__name__, exc)
                continue
            rid = meta.get("run_id")
            if not isinstance(rid, str) or not _RUN_ID.match(rid):
                continue
            if fp is not None and meta.get("fingerprint") != fp:
                log.info("checkpoint %d of run %s was made from other data or parameters: not used", s, rid)
                continue
            if keep is not None and not keep(meta):
                log.info("checkpoint %d of run %s lies past this run's end: not used", s, rid)
                continue
            out.append((rid, s))
        return out


def parse_offer(obj: Any, peer: str, tag: str) -> set[tuple[str, int]]:
    """A peer's list of ``[run_id, step]`` pairs, checked."""
    if obj is None:
        return set()
    if not isinstance(obj, list) or len(obj) > 1000:
        raise ProtocolError("checkpoint offer must be a list of [run_id, step] pairs", peer=peer, tag=tag)
    out = set()
    for item in obj:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and _RUN_ID.match(item[0]) and isinstance(item[1], int) and 0 <= item[1] < 10**9):
            raise ProtocolError(f"malformed checkpoint offer entry {item!r}", peer=peer, tag=tag)
        out.add((item[0], item[1]))
    return out


def pick_common(own: Iterable[tuple[str, int]], others: Iterable[set[tuple[str, int]]]) -> tuple[str, int] | None:
    """The newest ``(run_id, step)`` every party holds, or ``None``."""
    common = set(own)
    for o in others:
        common &= o
    if not common:
        return None
    return max(common, key=lambda rs: rs[1])
