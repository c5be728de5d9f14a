"""In-process channels for unit tests of protocol code.

A :class:`MemoryHub` is a little network of named parties living in one process (one
thread each). Messages go through exactly the same encoder, header checks and decoder
as over ZeroMQ -- frames are copied, so sender and receiver never share memory -- only
the sockets are missing. ``hub.fail(name)`` makes every peer of ``name`` see it as lost,
and ``hub.abort()`` wakes everybody up with an error (used by ``run_threads``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from hefl.errors import TransportError
from hefl.transport import wire
from hefl.transport.base import Channel

__all__ = ["MemoryChannel", "MemoryHub"]


class MemoryHub:
    """A set of in-memory channels that can reach each other.

    Parameters
    ----------
    names : iterable of str
        All party names on this hub.
    **options
        Passed to every :class:`MemoryChannel` (``recv_timeout``, ``max_message_bytes`` ...).
    """

    def __init__(self, names: Iterable[str], **options: Any) -> None:
        self.names = sorted({wire.validate_name(n) for n in names})
        self._options = options
        self._lock = threading.Lock()
        self._channels: dict[str, MemoryChannel] = {}
        self._aborted: str | None = None

    def channel(self, name: str, **options: Any) -> MemoryChannel:
        """Create (once) the channel of party ``name``."""
        with self._lock:
            if name not in self.names:
                raise ValueError(f"{name!r} is not on this hub ({', '.join(self.names)})")
            if name in self._channels:
                raise ValueError(f"channel of {name!r} already created")
            ch = MemoryChannel(self, name, [n for n in self.names if n != name],
                               **{**self._options, **options})
            self._channels[name] = ch
            others = [c for n, c in self._channels.items() if n != name]
        # Say hello both ways, as the ZeroMQ channel does on connect.
        for other in others:
            other._ingest(name, wire.control_header(name, "hello", ch.max_message_bytes), [])
            ch._ingest(other.self_name, wire.control_header(
                other.self_name, "hello", other.max_message_bytes), [])
        return ch

    def fail(self, name: str, reason: str) -> None:
        """Make every peer of ``name`` treat it as lost (``PeerLostError``)."""
        with self._lock:
            chans = [c for n, c in self._channels.items() if n != name]
        for c in chans:
            c._mark_lost(name, reason)

    def abort(self, reason: str) -> None:
        """Fail every blocked or future send/recv on every channel of the hub."""
        with self._lock:
            self._aborted = reason
            chans = list(self._channels.values())
        for c in chans:
            c._abort(reason)

    def _route(self, src: str, dst: str, header: bytes, frames: list[Any]) -> None:
        with self._lock:
            target = self._channels.get(dst)
        if target is not None and not target.closed:
            target._ingest(src, header, frames)


class MemoryChannel(Channel):
    """A :class:`Channel` to parties on the same :class:`MemoryHub` (same process)."""

    def __init__(self, hub: MemoryHub, self_name: str, peers: Iterable[str], **options: Any):
        super().__init__(self_name, peers, **options)
        self._hub = hub
        self._abort_reason: str | None = None

    def _transmit(self, peer: str, tag: str, header: bytes, frames: list[Any],
                  borrowed: bool) -> None:
        if self._abort_reason is not None:
            raise TransportError(self._abort_reason, peer=peer, tag=tag)
        # Copy: the receiver must not see later changes to the sender's arrays, and a
        # bytearray keeps received numpy arrays writable.
        self._hub._route(self.self_name, peer, bytes(header), [bytearray(f) for f in frames])

    def _abort(self, reason: str) -> None:
        self._abort_reason = reason
        for p in self.peers:
            self._mark_lost(p, reason)

    def close(self) -> None:
        """Close; peers waiting for a tag this party never sent fail at once."""
        if self.closed:
            return
        super().close()
        for p in self.peers:
            self._hub._route(self.self_name, p, wire.control_header(self.self_name, "bye"), [])
