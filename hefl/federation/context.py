"""``PartyContext``: what role code sees of the federation."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from hefl.transport import wire
from hefl.transport.base import Channel

__all__ = ["PartyContext"]

_P = TypeVar("_P", bound="PartyContext")


class PartyContext:
    """One party's view of the federation: who it is, its peers, and tagged messaging.

    Role code only ever calls ``send`` / ``recv`` / ``broadcast`` / ``gather`` with short
    tags and builds namespaces with :meth:`sub`; the same code runs over ZeroMQ between
    hosts, between local processes (:func:`hefl.federation.run_local`) and in threads
    (:func:`hefl.federation.run_threads`).

    Parameters
    ----------
    channel : Channel
        The transport (shared by every context derived from this one with :meth:`sub`).
    prefix : str
        Tag prefix of this namespace (``""`` at the root, else ending in ``/``).
    recv_timeout : float, optional
        Default ``recv`` timeout of this context (the channel's when ``None``).

    Notes
    -----
    Each ``(peer, full tag)`` can be sent once and received once; a second ``send`` or
    ``recv`` of the same tag, or a peer sending a tag twice, raises ``ProtocolError``.
    """

    def __init__(self, channel: Channel, prefix: str = "", *,
                 recv_timeout: float | None = None) -> None:
        if prefix and (not prefix.endswith("/") or not wire._TAG_RE.match(prefix[:-1])):
            raise ValueError(f"invalid tag prefix {prefix!r}")
        self._channel = channel
        self._prefix = prefix
        self._recv_timeout = recv_timeout

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(
        cls,
        self_name: str,
        addresses: Mapping[str, str],
        *,
        bind: str | None = None,
        curve_secret_key: str | bytes | os.PathLike | None = None,
        curve_public_keys: Mapping[str, str | bytes | os.PathLike] | None = None,
        recv_timeout: float = 300.0,
        connect_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 10.0,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        linger: float = 10.0,
    ) -> PartyContext:
        """Build this party's context for a real (multi-host) deployment.

        Binds ``addresses[self_name]`` (or ``bind``, e.g. ``"tcp://0.0.0.0:7001"`` when the
        advertised address is a host name), connects to every other party, and waits
        until all of them are up.

        Parameters
        ----------
        self_name : str
            This party's name; must be a key of ``addresses``.
        addresses : mapping
            Every party's name -> ``"tcp://host:port"``.
        bind : str, optional
            Local bind address when it differs from ``addresses[self_name]``.
        curve_secret_key : str, bytes or path, optional
            This party's CURVE secret key (Z85 or a ``.key_secret`` file).
        curve_public_keys : mapping, optional
            Every peer's CURVE public key (Z85 or ``.key`` file). With both, the channel
            is encrypted and accepts only these peers; with neither it runs in plaintext.
        recv_timeout : float
            Job-wide default ``recv`` timeout (s).
        connect_timeout : float, optional
            How long to wait for all peers to come up (default ``recv_timeout``).
        heartbeat_interval, heartbeat_timeout : float
            Heartbeat period (default ``min(1, heartbeat_timeout / 4)``) and the silence
            after which a peer counts as lost (s).
        max_message_bytes : int
            Largest message sent or accepted.
        linger : float
            How long ``close`` keeps delivering queued messages (s).

        Returns
        -------
        PartyContext
            Close it (or use it as a context manager) when done.
        """
        from hefl.transport.zmq_channel import ZmqChannel

        ch = ZmqChannel.from_addresses(
            self_name, addresses, bind=bind, curve_secret_key=curve_secret_key,
            curve_public_keys=curve_public_keys, recv_timeout=recv_timeout,
            heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout,
            max_message_bytes=max_message_bytes, linger=linger,
        )
        try:
            ch.wait_ready(recv_timeout if connect_timeout is None else connect_timeout)
        except BaseException:
            ch.close(linger=0)
            raise
        return cls(ch)

    # ------------------------------------------------------------------ identity

    @property
    def self_name(self) -> str:
        """This party's name."""
        return self._channel.self_name

    @property
    def peers(self) -> list[str]:
        """The other parties, sorted."""
        return self._channel.peers

    @property
    def channel(self) -> Channel:
        """The underlying channel (shared with every ``sub`` context)."""
        return self._channel

    @property
    def prefix(self) -> str:
        """This namespace's tag prefix (``""`` or ``"a/b/"``)."""
        return self._prefix

    def tag(self, tag: str) -> str:
        """The full tag ``tag`` gets in this namespace."""
        return self._prefix + tag

    # ------------------------------------------------------------------ messaging

    def send(self, peer: str, tag: str, obj: Any) -> None:
        """Send ``obj`` to ``peer`` under this namespace's ``tag``."""
        self._channel.send(peer, self._prefix + tag, obj)

    def recv(self, peer: str, tag: str, timeout: float | None = None) -> Any:
        """Wait for what ``peer`` sent under ``tag`` (timeout: this context's default)."""
        return self._channel.recv(peer, self._prefix + tag, self._timeout(timeout))

    def broadcast(self, tag: str, obj: Any, peers: list[str] | None = None) -> None:
        """Send ``obj`` under ``tag`` to ``peers`` (default: all peers), encoding it once."""
        targets = self.peers if peers is None else list(peers)
        if targets:
            self._channel.multicast(targets, self._prefix + tag, obj)

    def gather(self, tag: str, peers: list[str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
        """Receive ``tag`` from each of ``peers`` (default: all); ``{peer: obj}`` in peer order.

        ``timeout`` bounds the whole gather; any peer lost or closed fails it at once.
        """
        sources = self.peers if peers is None else list(peers)
        if not sources:
            return {}
        return self._channel.recv_many(sources, self._prefix + tag, self._timeout(timeout))

    def sub(self, name: str | int) -> PartyContext:
        """A context on the same channel whose tags are prefixed with ``name + "/"``.

        ``name`` is one tag segment (no ``/``), e.g. ``"tree-3"``; an int is used as text.
        """
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        wire.validate_segment(name)
        return PartyContext(self._channel, f"{self._prefix}{name}/",
                            recv_timeout=self._recv_timeout)

    def with_timeout(self, recv_timeout: float) -> PartyContext:
        """The same namespace with another default ``recv`` timeout."""
        return PartyContext(self._channel, self._prefix, recv_timeout=recv_timeout)

    def register_kit(self, public_kit: Any) -> None:
        """Accept ``CipherArray`` s under this public key (peers' kits received as payloads
        are registered automatically)."""
        self._channel.register_kit(public_kit)

    def barrier(self, name: str = "barrier", timeout: float | None = None) -> None:
        """Wait until every party has reached the barrier ``name`` (each name once)."""
        self.broadcast(f"{name}", time.time())
        self.gather(f"{name}", timeout=timeout)

    def close(self) -> None:
        """Close the channel (every context sharing it stops working)."""
        self._channel.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PartyContext {self.self_name!r} prefix={self._prefix!r} peers={self.peers}>"

    def _timeout(self, timeout: float | None) -> float | None:
        return self._recv_timeout if timeout is None else timeout
