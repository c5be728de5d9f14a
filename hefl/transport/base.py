"""The ``Channel`` base class: tagged, exactly-once messages between named parties.

A channel belongs to one party (``self_name``) and talks to a fixed set of peers.
``send(peer, tag, obj)`` delivers ``obj`` to ``peer``; ``recv(peer, tag)`` waits for the
message ``peer`` sent under ``tag``. Messages for other tags that arrive first are
buffered (bounded), so parties need not agree on an order, only on tags.

Rules every implementation shares (they live here, not in the transports):

* each ``(peer, tag)`` is sent at most once and received at most once; sending a tag
  twice, receiving it twice, or a peer sending it twice is a ``ProtocolError``;
* every ``recv`` has a timeout (the channel's ``recv_timeout`` unless given) and ends
  in ``TimeoutError`` naming the peer, the tag and what arrived instead;
* a peer that closed its channel (``bye``) or was declared lost makes a ``recv`` for a
  tag it never sent fail at once with ``PeerLostError`` instead of waiting;
* a malformed message poisons its sender: the next ``recv`` from it raises
  ``ProtocolError`` (nothing in the message is decoded, let alone executed).

Subclasses implement :meth:`Channel._transmit` (hand the encoded message to the wire)
and feed what they receive to :meth:`Channel._ingest`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hefl.errors import PeerLostError, ProtocolError, TimeoutError, TransportError
from hefl.transport import wire
from hefl.transport.wire import BadMessage

__all__ = ["Channel"]

log = logging.getLogger(__name__)

_C = TypeVar("_C", bound="Channel")


@dataclass
class _Entry:
    body: dict | tuple | None  # tuple: (dtype, shape) of one array (wire.parse_nd_header)
    frames: list[Any]
    nbytes: int
    error: str | None = None


@dataclass
class _PeerState:
    buffered: dict[str, _Entry] = field(default_factory=dict)
    buffered_bytes: int = 0
    consumed: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    seen: bool = False
    last_seen: float = 0.0
    closed: bool = False
    lost: str | None = None
    poison: tuple[str, str | None] | None = None  # (message, tag)
    max_bytes: int | None = None  # the largest message the peer accepts, once it said


class Channel(ABC):
    """One party's end of the links to its peers.

    Parameters
    ----------
    self_name : str
        This party's name.
    peers : iterable of str
        The other parties' names.
    recv_timeout : float
        Default timeout of :meth:`recv` in seconds (job-wide default).
    max_message_bytes : int
        Largest message accepted or sent (header + frames). Each channel announces its
        limit to its peers (``hello`` and heartbeats), and ``send`` refuses a message
        over the receiving peer's limit as well as over its own.
    max_buffered_messages : int
        Most messages buffered per peer before anybody asked for their tag.
    max_buffered_bytes : int, optional
        Most bytes buffered per peer that way (default: 4 x ``max_message_bytes``).
    """

    def __init__(
        self,
        self_name: str,
        peers: Iterable[str],
        *,
        recv_timeout: float = 300.0,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        max_buffered_messages: int = 100_000,
        max_buffered_bytes: int | None = None,
    ) -> None:
        self._self_name = wire.validate_name(self_name)
        names = sorted({wire.validate_name(p, "peer name") for p in peers})
        if self_name in names:
            raise ValueError(f"party {self_name!r} cannot be its own peer")
        if recv_timeout <= 0:
            raise ValueError(f"recv_timeout must be positive, got {recv_timeout!r}")
        self._peer_names = names
        self.recv_timeout = float(recv_timeout)
        self.max_message_bytes = int(max_message_bytes)
        self.max_buffered_messages = int(max_buffered_messages)
        self.max_buffered_bytes = int(
            max_buffered_bytes if max_buffered_bytes is not None else 4 * self.max_message_bytes
        )
        # _cond's lock; ``with self._mutex`` is C all the way (``with self._cond`` is not)
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._waiting = 0  # threads in _cond.wait: without any, _notify has nobody to wake
        self._state = {p: _PeerState() for p in names}
        self._kits: dict[str, Any] = {}
        self._closed = False
        self._gen = 0  # bumped (under _cond) on every state change receivers care about
        self.stats = {"messages_sent": 0, "bytes_sent": 0, "messages_received": 0,
                      "bytes_received": 0}

    # ------------------------------------------------------------------ properties

    @property
    def self_name(self) -> str:
        """This party's name."""
        return self._self_name

    @property
    def peers(self) -> list[str]:
        """The other parties, sorted."""
        return list(self._peer_names)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # ------------------------------------------------------------------ public API

    def send(self, peer: str, tag: str, obj: Any) -> None:
        """Send ``obj`` to ``peer`` under ``tag`` (once per peer and tag).

        Returns once the payload has been handed to the transport; arrays passed in may
        be modified afterwards. (Should ``send`` raise instead, e.g. on a timeout or a lost
        peer, the transport may still hold a large array it was sending: leave it be.)

        Raises
        ------
        ProtocolError
            Unknown peer, invalid or already used tag, message over the size limit.
        PeerLostError
            ``peer`` is known to be gone.
        TypeError
            ``obj`` is of a kind that cannot be sent.
        """
        self.multicast([peer], tag, obj)

    def multicast(self, peers: Sequence[str], tag: str, obj: Any) -> None:
        """Send the same ``obj`` under ``tag`` to each of ``peers``, encoding it once."""
        peers = self._check_peers(peers, tag)
        try:
            # _check_peers validated the tag, __init__ the name
            header, frames, borrowed = wire.build_message(self._self_name, tag, obj,
                                                          self._adopt_kit, checked=True)
        except (TypeError, ValueError) as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"while sending to {','.join(peers)!r} under tag {tag!r}")
            raise
        if len(frames) > wire.MAX_FRAMES:
            raise ProtocolError(f"message of {len(frames)} frames exceeds the limit of "
                                f"{wire.MAX_FRAMES} (send fewer, larger arrays)",
                                peer=",".join(peers), tag=tag)
        total = len(header)
        for f in frames:
            total += memoryview(f).nbytes
        if total > self.max_message_bytes or len(header) > wire.MAX_HEADER_BYTES:
            raise ProtocolError(
                f"message of {total} bytes exceeds the limit of {self.max_message_bytes}"
                if total > self.max_message_bytes
                else f"message header of {len(header)} bytes exceeds {wire.MAX_HEADER_BYTES}",
                peer=",".join(peers), tag=tag,
            )
        with self._mutex:
            for p in peers:
                st = self._state[p]
                if tag in st.sent:
                    raise ProtocolError("tag already sent to this peer", peer=p, tag=tag)
                if st.max_bytes is not None and total > st.max_bytes:
                    raise ProtocolError(f"message of {total} bytes exceeds the peer's limit of "
                                        f"{st.max_bytes} (its max_message_bytes)", peer=p, tag=tag)
                if st.lost is not None:
                    raise PeerLostError(f"cannot send: {st.lost}", peer=p, tag=tag)
                if st.closed:
                    raise PeerLostError("cannot send: peer has closed its channel", peer=p,
                                        tag=tag)
            for p in peers:
                self._state[p].sent.add(tag)
        for p in peers:
            self._transmit(p, tag, header, frames, borrowed)
            with self._mutex:
                self.stats["messages_sent"] += 1
                self.stats["bytes_sent"] += total

    def recv(self, peer: str, tag: str, timeout: float | None = None) -> Any:
        """Wait for the message ``peer`` sent under ``tag`` and return its payload.

        Parameters
        ----------
        peer : str
            The sender.
        tag : str
            The full tag.
        timeout : float, optional
            Seconds to wait; the channel's ``recv_timeout`` when ``None``.

        Raises
        ------
        TimeoutError
            Nothing arrived in time (the message says what arrived instead).
        PeerLostError
            The peer died or closed its channel without sending ``tag``.
        ProtocolError
            Tag already received, or the message (or an earlier one from ``peer``) was
            malformed.
        """
        return self.recv_many([peer], tag, timeout)[peer]  # one path (tests hook it)

    def recv_many(
        self, peers: Sequence[str], tag: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait for ``tag`` from each of ``peers`` (in any arrival order); one shared deadline.

        Fails as soon as any of the peers is lost, closed or poisoned.
        """
        peers = self._check_peers(peers, tag)
        timeout = self.recv_timeout if timeout is None else float(timeout)
        entries = self._take(peers, tag, timeout)
        out: dict[str, Any] = {}
        for p in peers:
            e = entries[p]
            if e.error is not None:
                raise ProtocolError(f"rejected message: {e.error}", peer=p, tag=tag)
            out[p] = wire.decode_payload(
                e.body or {}, e.frames, kits=self._kits, on_kit=self._adopt_kit, peer=p, tag=tag
            )
        return out

    def register_kit(self, kit: Any) -> None:
        """Accept ``CipherArray`` s under ``kit``'s public key (looked up by fingerprint).

        Kits received as payloads, kits sent, and the kits of ``CipherArray`` s sent are
        registered automatically (without replacing a kit registered before).
        """
        self._kits[self._fingerprint(kit)] = kit

    def _adopt_kit(self, kit: Any) -> None:
        self._kits.setdefault(self._fingerprint(kit), kit)

    @staticmethod
    def _fingerprint(kit: Any) -> str:
        fp = kit.fingerprint() if callable(getattr(kit, "fingerprint", None)) else \
            getattr(kit, "fingerprint", None)
        if not isinstance(fp, str) or not fp:
            raise TypeError(f"{type(kit).__name__} has no usable fingerprint")
        return fp

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every peer has been heard from (its channel is up and connected).

        Raises
        ------
        TimeoutError
            Some peer did not show up in time (names them).
        PeerLostError
            A peer that has not shown up yet is known to be gone (:meth:`mark_lost`).
        """
        timeout = self.recv_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        with self._mutex:
            while True:
                missing = [p for p, st in self._state.items() if not st.seen]
                if not missing:
                    return
                for p in missing:
                    st = self._state[p]
                    if st.poison is not None:
                        raise ProtocolError(st.poison[0], peer=p, tag=st.poison[1])
                    if st.lost is not None:  # e.g. the launcher saw its process die
                        raise PeerLostError(f"before it connected: {st.lost}", peer=p)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise TimeoutError(
                        f"peers {', '.join(missing)} not reachable after {timeout:.3g} s",
                        peer=missing[0],
                    )
                self._wait_step(min(remaining, 1.0))

    def _check_peers(self, peers: Sequence[str], tag: str) -> list[str]:
        """The open channel, known and distinct ``peers`` and a valid ``tag``; the peers as a list."""
        self._check_open()
        peers = list(peers)
        state = self._state
        for p in peers:
            if type(p) is not str or p not in state:
                self._check_peer(p, tag)
        self._check_tag(tag, peers[0] if peers else None)
        if len(peers) > 1 and len(set(peers)) != len(peers):
            raise ProtocolError("the same peer is listed twice", peer=",".join(peers), tag=tag)
        return peers

    def mark_lost(self, peer: str, reason: str) -> None:
        """Declare ``peer`` lost because something outside the channel saw it go (e.g. the
        launcher of a local run saw its process die): every ``send`` to it and ``recv`` from
        it fails with ``PeerLostError`` carrying ``reason``, without waiting for the
        heartbeat timeout. No effect on a peer that has closed its channel."""
        if peer not in self._state:
            raise ValueError(f"unknown peer {peer!r}")
        self._mark_lost(peer, reason)

    def pending_tags(self, peer: str) -> list[str]:
        """Tags buffered from ``peer`` that nobody has asked for yet (for diagnostics)."""
        with self._mutex:
            return sorted(self._state[peer].buffered)

    def close(self) -> None:
        """Close the channel; blocked receivers wake up with ``TransportError``."""
        with self._mutex:
            self._closed = True
            self._notify()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._self_name!r} peers={self._peer_names}>"

    # ------------------------------------------------------------------ for transports

    @abstractmethod
    def _transmit(self, peer: str, tag: str, header: bytes, frames: list[Any],
                  borrowed: bool) -> None:
        """Hand one encoded message to the wire; block until ``frames`` may be reused."""

    def _ingest(self, peer: str, header_buf: Any, frames: list[Any]) -> None:
        """Take one received message from ``peer``.

        Data messages are checked and buffered under their tag; ``bye`` marks the peer
        closed; the caller handles ``ping`` / ``pong`` / ``hello`` beyond marking the peer
        as seen.
        """
        nd = wire.parse_nd_header(header_buf)  # one array: most messages, read fast
        if nd is not None and nd[0] == peer:
            self._deliver(peer, nd[1], (nd[2], nd[3]), [nd[4]], frames)
            return
        try:
            header = wire.parse_header(header_buf)
        except BadMessage as exc:
            self._poison(peer, f"rejected message: {exc}", None)
            return
        if header["src"] != peer:
            self._poison(peer, f"rejected message claiming to come from {header['src']!r}", None)
            return
        kind = header["kind"]
        if kind == "msg":
            # marks the peer seen, under the same lock
            self._deliver(peer, header["tag"], header["body"], header["sizes"], frames)
            return
        with self._mutex:
            st = self._state[peer]
            st.seen = True
            st.last_seen = time.monotonic()
            if kind == "hello":
                st.max_bytes = wire.announced_limit(header) or st.max_bytes
                self._notify()
            elif kind == "bye":
                st.closed = True
                log.debug("%s: peer %s closed its channel", self._self_name, peer)
                self._notify()

    def _deliver(self, peer: str, tag: str, body: dict | tuple, sizes: list[int],
                 frames: list[Any]) -> None:
        try:
            nbytes = wire.check_sizes(sizes, frames, self.max_message_bytes)
            entry = _Entry(body, frames, nbytes)
        except BadMessage as exc:
            entry = _Entry(None, [], 0, str(exc))
        with self._mutex:
            st = self._state[peer]
            st.seen = True
            st.last_seen = time.monotonic()
            if st.poison is not None:
                return
            if tag in st.consumed or tag in st.buffered:
                self._poison_locked(peer, "peer sent this tag twice", tag)
                return
            if (
                len(st.buffered) >= self.max_buffered_messages
                or st.buffered_bytes + entry.nbytes > self.max_buffered_bytes
            ):
                self._poison_locked(
                    peer,
                    f"peer sent more than {self.max_buffered_messages} messages /"
                    f" {self.max_buffered_bytes} bytes nobody asked for",
                    tag,
                )
                return
            st.buffered[tag] = entry
            st.buffered_bytes += entry.nbytes
            self.stats["messages_received"] += 1
            self.stats["bytes_received"] += entry.nbytes
            self._notify()

    def _notify(self) -> None:
        """Wake every waiting receiver (call with ``_cond`` held)."""
        self._gen += 1
        if self._waiting:
            self._cond.notify_all()

    def _wait_step(self, timeout: float) -> None:
        """Wait (``_cond`` held) for a state change or ``timeout``; transports may
        override it to receive in the waiting thread itself."""
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _poison(self, peer: str, message: str, tag: str | None) -> None:
        with self._mutex:
            self._poison_locked(peer, message, tag)

    def _poison_locked(self, peer: str, message: str, tag: str | None) -> None:
        st = self._state[peer]
        if st.poison is None:
            log.warning("%s: %s (peer %r, tag %r)", self._self_name, message, peer, tag)
            st.poison = (message, tag)
            st.buffered.clear()
            st.buffered_bytes = 0
        self._notify()

    def _mark_lost(self, peer: str, reason: str) -> None:
        with self._mutex:
            st = self._state[peer]
            if st.lost is None and not st.closed:
                log.warning("%s: lost peer %s: %s", self._self_name, peer, reason)
                st.lost = reason
                self._notify()

    def _peer_state(self, peer: str) -> _PeerState:
        return self._state[peer]

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"channel of {self._self_name!r} is closed")

    def _check_peer(self, peer: str, tag: str) -> None:
        if peer not in self._state:
            raise ProtocolError(
                f"unknown peer (this is {self._self_name!r}; peers: {', '.join(self._peer_names)})",
                peer=str(peer), tag=str(tag),
            )

    def _check_tag(self, tag: str, peer: str | None) -> None:
        try:
            wire.validate_tag(tag)
        except ValueError as exc:
            raise ProtocolError(str(exc), peer=peer, tag=str(tag)) from None

    def _take(self, peers: list[str], tag: str, timeout: float) -> dict[str, _Entry]:
        start = time.monotonic()
        deadline = start + timeout
        got: dict[str, _Entry] = {}
        with self._mutex:
            for p in peers:
                if tag in self._state[p].consumed:
                    raise ProtocolError("tag already received from this peer", peer=p, tag=tag)
            while True:
                for p in peers:
                    if p in got:
                        continue
                    st = self._state[p]
                    if tag in st.consumed:  # another thread took it while we waited
                        raise ProtocolError("tag already received from this peer", peer=p, tag=tag)
                    if st.poison is not None:
                        msg, bad_tag = st.poison
                        extra = "" if bad_tag in (None, tag) else f" (in tag {bad_tag!r})"
                        raise ProtocolError(msg + extra, peer=p, tag=tag)
                    entry = st.buffered.pop(tag, None)
                    if entry is not None:
                        st.consumed.add(tag)
                        st.buffered_bytes -= entry.nbytes
                        got[p] = entry
                        continue
                    if self._closed:
                        raise TransportError(f"channel of {self._self_name!r} was closed",
                                             peer=p, tag=tag)
                    if st.lost is not None:
                        raise PeerLostError(st.lost, peer=p, tag=tag)
                    if st.closed:
                        raise PeerLostError(
                            "peer closed its channel without sending this tag"
                            + self._instead(st) + self._lost_others(p), peer=p, tag=tag,
                        )
                if len(got) == len(peers):
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    p = next(x for x in peers if x not in got)
                    st = self._state[p]
                    why = "" if st.seen else " (peer never connected)"
                    raise TimeoutError(
                        f"no message after {timeout:.3g} s{why}{self._instead(st)}",
                        peer=p, tag=tag,
                    )
                self._wait_step(remaining)

    def _lost_others(self, peer: str) -> str:
        """With ``_cond`` held: the other peers already lost (a peer usually closes its
        channel early because it lost one of them: that is the root cause to report)."""
        lost = [(q, st.lost) for q, st in self._state.items() if q != peer and st.lost is not None]
        return "".join(f"; peer {q!r} is lost too: {why}" for q, why in lost)

    @staticmethod
    def _instead(st: _PeerState) -> str:
        if not st.buffered:
            return ""
        tags = sorted(st.buffered)
        more = f" and {len(tags) - 5} more" if len(tags) > 5 else ""
        return f"; received instead: {', '.join(repr(t) for t in tags[:5])}{more}"
