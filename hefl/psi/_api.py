"""Public entry points: :func:`intersect` and :func:`align_dataframe`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hefl.errors import ConfigError, DataError
from hefl.psi._ecdh import MAX_BATCH, ecdh_psi
from hefl.psi._ids import prepare_ids

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["align_dataframe", "intersect"]

log = logging.getLogger("hefl.psi")

PROTOCOLS = ("ecdh",)
DEFAULT_BATCH_SIZE = 4096


def intersect(
    ctx: Any,
    ids: Iterable[Any],
    *,
    protocol: Literal["ecdh"] = "ecdh",
    duplicates: Literal["raise", "drop"] = "raise",
    peers: Sequence[str] | None = None,
    leader: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_jobs: int | None = 1,
    timeout: float | None = None,
    session: str = "psi",
) -> np.ndarray:
    """Private set intersection of this party's IDs with every peer's.

    Every party calls ``intersect`` at the same time with its own IDs. Each gets back the
    positions (into its own ``ids``) of the IDs that *all* parties hold, listed in one order
    that is the same on every party: row ``r`` of every party's result is the same ID, so
    ``frame.iloc[result]`` lines up across parties.

    Parameters
    ----------
    ctx : hefl.federation.PartyContext
        This party's context (``self_name``, ``peers``, ``send``, ``recv``, ``sub``).
    ids : iterable of str or int
        This party's IDs (a list, numpy array or pandas Series/Index). Integers are
        converted to their decimal string; IDs match as exact strings (no case folding or
        Unicode normalisation).
    protocol : {"ecdh"}
        ECDH-PSI over Curve25519 (X25519).
    duplicates : {"raise", "drop"}
        What to do with repeated IDs: raise :class:`~hefl.errors.DataError` (default) or
        keep the first occurrence (the number dropped is logged).
    peers : sequence of str, optional
        The parties to intersect with (default: all of ``ctx.peers``). Every taking part
        must name the same set of parties.
    leader : str, optional
        The party that matches the fully blinded sets (default: first name in sorted
        order). It learns the sizes of all partial intersections; see the package notes.
    batch_size : int
        IDs per message (default 4096); bounds the memory in flight.
    n_jobs : int or None
        Processes for the elliptic-curve work: ``1`` (default) works in this process,
        ``k`` uses ``k`` worker processes, ``-1`` one per core. Workers are spawned
        (not forked, the transport has threads), so a script using ``n_jobs > 1`` needs
        an ``if __name__ == "__main__":`` guard. When all parties share one machine,
        keep ``1``: the parties already keep the cores busy.
    timeout : float, optional
        Seconds to wait for any single message before :class:`~hefl.errors.TimeoutError`.
    session : str
        Tag namespace (``ctx.sub(session)``); use a distinct one for each PSI run between
        the same parties in one context.

    Returns
    -------
    numpy.ndarray of int64
        Positions into ``ids`` of the shared IDs, in the order agreed by all parties.
        Empty when the intersection (or any set) is empty.

    Raises
    ------
    DataError
        Bad IDs (floats, missing values, duplicates with ``duplicates="raise"``).
    ConfigError
        Unknown protocol, no peers, bad batch size / n_jobs / leader.
    ProtocolError
        A peer sent a malformed message or point, or disagrees on the parameters.
    TimeoutError, PeerLostError
        From the transport.

    Examples
    --------
    >>> from hefl.federation import run_local
    >>> from hefl import psi
    >>> out = run_local({
    ...     "alice": lambda ctx: psi.intersect(ctx, ["u1", "u2", "u3"]),
    ...     "bob": lambda ctx: psi.intersect(ctx, ["u3", "u9", "u1"]),
    ... })                                              # doctest: +SKIP
    >>> sorted(["u1", "u2", "u3"][i] for i in out["alice"])   # doctest: +SKIP
    ['u1', 'u3']
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown PSI protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch_size must be an integer in [1, {MAX_BATCH}], got {batch_size!r}")
    all_peers = list(ctx.peers)
    if peers is None:
        chosen = all_peers
    else:
        if isinstance(peers, str):
            raise ConfigError(f"peers must be a list of party names, not the string {peers!r}")
        chosen = list(dict.fromkeys(peers))
        unknown = [p for p in chosen if p not in all_peers]
        if unknown:
            raise ConfigError(f"unknown peer(s) {unknown}; this context knows {all_peers}")
    if not chosen:
        raise ConfigError("PSI needs at least one peer; the context has none")
    kept, positions = prepare_ids(ids, duplicates)
    sub = ctx.sub(session)
    local = ecdh_psi(
        sub, kept, peers=chosen, batch_size=batch_size, n_jobs=n_jobs, leader=leader, timeout=timeout
    )
    return positions[local]


def align_dataframe(
    ctx: Any,
    frame: pd.DataFrame,
    id_column: str,
    **kwargs: Any,
) -> pd.DataFrame:
    """Keep the rows whose ID every party holds, in the order agreed by all parties.

    Parameters
    ----------
    ctx : hefl.federation.PartyContext
        This party's context.
    frame : pandas.DataFrame
        This party's data.
    id_column : str
        Column holding the IDs (strings or integers).
    **kwargs
        Passed to :func:`intersect` (``duplicates``, ``n_jobs``, ``timeout`` …).

    Returns
    -------
    pandas.DataFrame
        ``frame`` restricted to the shared IDs, reordered so that row ``r`` is the same ID
        on every party, with a fresh ``RangeIndex``.
    """
    if id_column not in frame.columns:
        raise DataError(f"ID column {id_column!r} not in the frame (columns: {list(frame.columns)[:20]})")
    ids = frame[id_column]
    if getattr(ids, "ndim", 1) != 1:  # repeated column labels select a DataFrame
        raise DataError(f"the frame has {ids.shape[1]} columns named {id_column!r}; the ID column must be one")
    rows = intersect(ctx, ids, **kwargs)
    return frame.iloc[rows].reset_index(drop=True)
