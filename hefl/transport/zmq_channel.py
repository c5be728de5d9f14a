"""The ZeroMQ channel: one ROUTER in, one DEALER per peer out, CurveZMQ when keyed.

Topology
--------
Each party binds one ROUTER socket at its own address and connects one DEALER (routing
id = its own name) to every peer's ROUTER; data always flows DEALER -> ROUTER, so what a
party receives arrives on its ROUTER tagged with the sender's routing id. Heartbeats
use a second, small DEALER per peer (routing id ``NAME!hb``) on its own TCP connection,
so they are never stuck behind a long transfer: every ``heartbeat_interval`` a party
pings each peer on it and the peer's ROUTER answers with a pong. A peer is alive while
its pings or pongs keep coming; after ``heartbeat_timeout`` seconds of silence it is
declared lost and every ``recv`` waiting on it fails with ``PeerLostError``. A peer
that has never been heard from is not "lost" (it may simply start later): waiting on
it ends in ``TimeoutError``. ``bye`` travels on the data connection, behind the data.

The heartbeat sockets belong to an I/O thread. The ROUTER is read by whoever holds its
lock: the I/O thread while nobody is waiting in ``recv``, else the waiting thread
itself, so a stream of messages is received without a thread hand-off per message;
either way what arrives is checked and buffered by tag. ``send`` uses the peer's data DEALER directly (one lock per peer) and
returns once ZeroMQ owns the message: frames of at least ``zero_copy_bytes`` that are
views of the caller's memory (numpy arrays) are sent zero-copy and ``send`` waits until
ZeroMQ has written them out, so the caller may modify its arrays afterwards (where the
``hefl._zsend`` extension is built, ZeroMQ's release wakes the sender directly rather
than through pyzmq's garbage-collector thread); smaller ones are copied, which keeps a
stream of small messages pipelined.

Security
--------
With ``curve_secret_key`` and ``curve_public_keys`` every connection is CurveZMQ
(authenticated and encrypted): the ROUTER is a CURVE server, each DEALER pins its
peer's public key, and a ZAP handler admits only the listed peers' public keys and
binds each to its party name; a message whose routing id is not the name its key
belongs to is dropped. Without keys the channel runs in plaintext mode (no
authentication, no encryption) and logs that once per process.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import zmq
import zmq.utils.z85

from hefl.errors import ConfigError, PeerLostError, TimeoutError, TransportError
from hefl.transport import curve, wire
from hefl.transport.base import Channel

__all__ = ["ZmqChannel"]

log = logging.getLogger(__name__)

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_plaintext_logged = False
_LOOPBACK = ("tcp://127.", "tcp://localhost", "tcp://[::1]", "ipc://", "inproc://")


_HB_SUFFIX = b"!hb"  # routing-id suffix of heartbeat connections ('!' is not in names)
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq converts enum flags on every call
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)
# Received parts smaller than this come as bytes (routing ids, headers, small payloads),
# larger ones as zero-copy frames.
_COPY_BELOW = 4096
# Most parts a received message may have: routing id, header, payload frames.
_MAX_PARTS = wire.MAX_FRAMES + 2
# Most messages taken off the ROUTER at a time (then whoever waits gets a look in).
_BATCH = 1000


# How a frame is sent: copied by libzmq; zero-copy through pyzmq (immutable bytes, or a
# tracked zmq.Frame); zero-copy through hefl._zsend (a view of the caller's memory).
_COPY, _ZERO_COPY, _DIRECT = 0, 1, 2


def _bind_zsend() -> Any:
    """``hefl._zsend`` bound to pyzmq's libzmq, or ``None`` (pyzmq's trackers are used)."""
    try:
        from hefl import _zsend
    except ImportError:
        return None
    if not all(hasattr(_zsend, f) for f in ("bind", "send", "recv", "send_multipart")):
        log.debug("hefl._zsend is an older build: zero-copy sends through pyzmq's trackers")
        return None  # a stale extension beside newer code: use pyzmq throughout
    try:
        from zmq.backend.cython import _zmq as pyzmq_ext

        _zsend.bind(pyzmq_ext.__file__, zmq.zmq_version_info())
    except (ImportError, AttributeError, OSError) as exc:
        log.debug("zero-copy sends through pyzmq's trackers: %s", exc)
        return None
    return _zsend


_ZSEND = _bind_zsend()


def _send_parts(sock: zmq.Socket, parts: list[tuple[Any, int]]) -> list[Any]:
    """Send ``(part, how)`` pairs as one message, without blocking; return what to wait
    on for the ``_DIRECT`` parts (``wait(timeout) -> bool``, true once released).

    The high-water mark (``zmq.Again``) is met by the first part, the header: once it is
    accepted ZeroMQ takes the rest of the message too (atomic delivery). A later part
    fails only when its connection dies (ZeroMQ then drops the whole message and says
    ``Again``: the caller sends it again) or when our side cannot hand it over; either
    way the message is ended with an empty frame before the error is raised, so that
    the next message does not become its tail (ZeroMQ drops that frame along with a
    dropped message; a peer that got the first parts rejects the message, whose frames
    do not match its header). A function of its own so that no loop variable outlives
    the call and keeps a tracked frame alive.
    """
    waits = []
    last = len(parts) - 1
    for i, (part, how) in enumerate(parts):
        flags = _NOBLOCK_MORE if i < last else _NOBLOCK
        try:
            if how == _DIRECT:
                err, sent = _ZSEND.send(sock.underlying, part, flags)
                if err:
                    raise _zmq_error(err)
                waits.append(sent)
            else:
                sock.send(part, flags, copy=how == _COPY)
        except BaseException:
            if i > 0:
                try:
                    sock.send(b"", _NOBLOCK)
                except zmq.ZMQError:
                    pass  # the socket is gone: so is the half message
            raise
    return waits


def _zmq_error(err: int) -> zmq.ZMQError:
    """The pyzmq exception for a libzmq error number."""
    if err == errno.EAGAIN:
        return zmq.Again(err)
    if err == zmq.ETERM:
        return zmq.ContextTerminated(err)
    return zmq.ZMQError(err)


class _Link:
    """The data DEALER to one peer, used by sending threads under its lock."""

    __slots__ = ("closed", "lock", "sock")

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False


class ZmqChannel(Channel):
    """A :class:`~hefl.transport.base.Channel` over ZeroMQ (TCP), optionally CurveZMQ.

    Parameters
    ----------
    self_name : str
        This party's name (also its DEALER routing id).
    peers : iterable of str
        The other parties.
    bind : str
        Address of this party's ROUTER, e.g. ``"tcp://0.0.0.0:7001"``; a ``*`` port
        picks a free one (see :attr:`bound_address`).
    curve_secret_key : str, bytes or path, optional
        This party's CURVE secret key (Z85, or a ``.key_secret`` file).
    curve_public_keys : mapping, optional
        Peer name -> public key (Z85, or a ``.key`` file) for every peer. Only these
        peers are accepted.
    recv_timeout : float
        Default ``recv`` timeout (s); also bounds how long ``send`` may block.
    heartbeat_interval, heartbeat_timeout : float
        Ping period (default ``min(1, heartbeat_timeout / 4)``) and the silence after
        which a peer is declared lost (s).
    linger : float
        On ``close``, how long to keep trying to deliver what is still queued (s).
    zero_copy_bytes : int
        Caller-owned frames at least this large are sent zero-copy (``send`` then waits
        until they are written out); smaller ones are copied.
    max_message_bytes, max_buffered_messages, max_buffered_bytes
        See :class:`~hefl.transport.base.Channel`.

    Notes
    -----
    Call :meth:`connect` with every peer's address before sending;
    :meth:`from_addresses` does both steps.
    """

    def __init__(
        self,
        self_name: str,
        peers: Iterable[str],
        *,
        bind: str = "tcp://127.0.0.1:*",
        curve_secret_key: str | bytes | os.PathLike | None = None,
        curve_public_keys: Mapping[str, str | bytes | os.PathLike] | None = None,
        recv_timeout: float = 300.0,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 10.0,
        linger: float = 10.0,
        zero_copy_bytes: int = 128 * 1024,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        max_buffered_messages: int = 100_000,
        max_buffered_bytes: int | None = None,
    ) -> None:
        super().__init__(
            self_name, peers, recv_timeout=recv_timeout, max_message_bytes=max_message_bytes,
            max_buffered_messages=max_buffered_messages, max_buffered_bytes=max_buffered_bytes,
        )
        if heartbeat_interval is None:
            heartbeat_interval = min(1.0, heartbeat_timeout / 4)
        if heartbeat_interval <= 0 or heartbeat_timeout <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout, got "
                             f"{heartbeat_interval!r}, {heartbeat_timeout!r}")
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.linger = float(linger)
        self.zero_copy_bytes = max(int(zero_copy_bytes), zmq.COPY_THRESHOLD)
        self._curve = self._curve_config(curve_secret_key, curve_public_keys)
        self._zctx = zmq.Context()
        self._zap: zmq.Socket | None = None
        self._links: dict[str, _Link] = {}
        self._cmds: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._unknown_logged: set[bytes] = set()
        # Whoever holds _router_lock reads the ROUTER: the I/O thread while nobody waits in
        # recv, else the waiting thread itself (no hand-off per message while streaming).
        # Lock order: _router_lock before _cond.
        self._router_lock = threading.Lock()
        self._router_wanted = 0
        self._router_poller: zmq.Poller | None = None  # used under _router_lock only
        # routing id -> (peer, heartbeat connection?): who a received message is from
        self._idents: dict[bytes, tuple[str, bool]] = {}
        for p in self._peer_names:
            self._idents[p.encode("ascii")] = (p, False)
            self._idents[p.encode("ascii") + _HB_SUFFIX] = (p, True)
        self._pong = wire.control_header(self_name, "pong", self.max_message_bytes)
        self.denied: list[str] = []  # ZAP refusals ("address key"), for diagnostics
        try:
            if self._curve is not None:
                # The ZAP handler must exist before the CURVE server socket binds.
                self._zap = self._zctx.socket(zmq.REP)
                self._zap.linger = 0
                self._zap.bind(_ZAP_ENDPOINT)
            self._router = self._zctx.socket(zmq.ROUTER)
            self._router.linger = 0
            self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._router.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            self._router.setsockopt(zmq.RCVHWM, 0)  # our I/O thread drains it; bounds are ours
            if self._curve is not None:
                self._router.curve_server = True
                self._router.curve_secretkey = self._curve["secret"]
                self._router.curve_publickey = self._curve["public"]
                self._router.zap_domain = b"hefl"
            try:
                self._router.bind(bind)
            except zmq.ZMQError as exc:
                raise ConfigError(f"party {self_name!r} cannot bind {bind!r}: {exc}") from None
            self.bound_address: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self._zctx.destroy(linger=0)
            raise
        self._log_mode(bind)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._io_main, name=f"hefl-io-{self_name}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_addresses(
        cls, self_name: str, addresses: Mapping[str, str], *, bind: str | None = None,
        **options: Any,
    ) -> ZmqChannel:
        """Bind ``addresses[self_name]`` (or ``bind``) and connect to every other address."""
        if self_name not in addresses:
            raise ConfigError(f"party {self_name!r} is not in the address list "
                              f"({', '.join(sorted(addresses))})")
        ch = cls(self_name, [n for n in addresses if n != self_name],
                 bind=bind or addresses[self_name], **options)
        try:
            ch.connect(addresses)
        except BaseException:
            ch.close(linger=0)
            raise
        return ch

    def _curve_config(self, secret: Any, publics: Mapping[str, Any] | None) -> dict | None:
        if secret is None and not publics:
            return None
        if secret is None:
            raise ConfigError(f"curve_public_keys given but no curve_secret_key for "
                              f"{self.self_name!r}")
        if publics is None:
            raise ConfigError(f"curve_secret_key given but no curve_public_keys for "
                              f"{self.self_name!r}'s peers")
        if not zmq.has("curve"):
            raise ConfigError("this libzmq was built without CURVE support")
        missing = [p for p in self.peers if p not in publics]
        if missing:
            raise ConfigError(f"no CURVE public key for peer(s) {', '.join(missing)}")
        sec = curve.load_secret_key(secret)
        pub = zmq.curve_public(sec)
        peer_keys = {p: curve.load_public_key(publics[p]) for p in self.peers}
        if self.self_name in publics and curve.load_public_key(publics[self.self_name]) != pub:
            raise ConfigError(f"the public key listed for {self.self_name!r} does not match "
                              "its secret key")
        allowed: dict[bytes, str] = {}
        for p, k in peer_keys.items():
            raw = zmq.utils.z85.decode(k)
            if raw in allowed or k == pub:
                raise ConfigError(f"peers {allowed.get(raw, self.self_name)!r} and {p!r} share "
                                  "a CURVE public key")
            allowed[raw] = p
        return {"secret": sec, "public": pub, "peers": peer_keys, "allowed": allowed}

    def _log_mode(self, bind: str) -> None:
        global _plaintext_logged
        if self._curve is not None:
            log.info("%s: CurveZMQ on %s, accepting %s", self.self_name, self.bound_address,
                     ", ".join(self.peers))
        elif not _plaintext_logged:
            _plaintext_logged = True
            level = logging.INFO if bind.startswith(_LOOPBACK) else logging.WARNING
            log.log(level, "%s: plaintext mode (no CURVE keys): messages are neither "
                    "authenticated nor encrypted", self.self_name)

    @property
    def encrypted(self) -> bool:
        """Whether connections use CurveZMQ."""
        return self._curve is not None

    def _dealer(self, peer: str, identity: bytes, address: str,
                options: dict[int, int] | None = None) -> zmq.Socket:
        d = self._zctx.socket(zmq.DEALER)
        try:
            for opt, value in (options or {}).items():
                d.setsockopt(opt, value)
            d.setsockopt(zmq.IDENTITY, identity)
            d.linger = 0
            d.setsockopt(zmq.RECONNECT_IVL, 100)
            d.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            d.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if self._curve is not None:
                d.curve_secretkey = self._curve["secret"]
                d.curve_publickey = self._curve["public"]
                d.curve_serverkey = self._curve["peers"][peer]
            d.connect(address)
        except BaseException:
            d.close(linger=0)
            raise
        return d

    def connect(self, addresses: Mapping[str, str]) -> None:
        """Connect to every peer's ROUTER (``addresses``: name -> endpoint)."""
        self._check_open()
        missing = [p for p in self.peers if p not in addresses]
        if missing:
            raise ConfigError(f"no address for peer(s) {', '.join(missing)}")
        if self._links:
            raise ConfigError(f"{self.self_name!r} is already connected")
        me = self.self_name.encode("ascii")
        links: dict[str, _Link] = {}
        beats: dict[str, zmq.Socket] = {}
        hello = wire.control_header(self.self_name, "hello", self.max_message_bytes)
        try:
            for p in self.peers:
                links[p] = _Link(self._dealer(p, me, addresses[p]))
                links[p].sock.send(hello, zmq.NOBLOCK)  # tells the peer we are up
                # Heartbeats only to a live connection, never a backlog of stale pings.
                beats[p] = self._dealer(p, me + _HB_SUFFIX, addresses[p],
                                        {zmq.IMMEDIATE: 1, zmq.SNDHWM: 16})
        except BaseException:
            for s in [*(lk.sock for lk in links.values()), *beats.values()]:
                s.close(linger=0)
            raise
        self._links = links
        with self._lock:
            self._cmds.append(("adopt", beats))
        self._wake()

    # ------------------------------------------------------------------ Channel API

    def _transmit(self, peer: str, tag: str, header: bytes, frames: list[Any],
                  borrowed: bool) -> None:
        link = self._links.get(peer)
        if link is None:
            raise TransportError(f"not connected to {peer!r} (call connect() first)",
                                 peer=peer, tag=tag)
        deadline = time.monotonic() + self.recv_timeout
        # hefl._zsend sends the whole message in one call (large parts zero-copy, each
        # with a Sent to wait on); None: a part is not C-contiguous, use the general path
        whole = [header, *frames] if _ZSEND is not None else None
        parts: list[tuple[Any, int]] | None = None
        sent: list[Any] = []
        with link.lock:
            while True:
                if link.closed:
                    raise TransportError("channel closed while sending", peer=peer, tag=tag)
                try:
                    if whole is not None:
                        got = _ZSEND.send_multipart(link.sock.underlying, whole,
                                                    self.zero_copy_bytes)
                        if got is not None:
                            if got[0]:
                                raise _zmq_error(got[0])
                            sent = got[1]
                            break
                        whole = None  # not C-contiguous: the general path, from here on
                    if parts is None:
                        parts, sent = self._frames(header, frames)
                    sent += _send_parts(link.sock, parts)
                    break
                except zmq.Again:
                    self._check_send(peer, tag, deadline)
                    link.sock.poll(50, zmq.POLLOUT)
        del parts, whole  # drop our references to the frames so that they can be released
        for done in sent:
            while not done.wait(0.05):
                self._check_send(peer, tag, deadline)

    def _frames(self, header: bytes, frames: list[Any]) -> tuple[list[tuple[Any, int]], list[Any]]:
        """``(part, how)`` pairs for a message, and the events set once ZeroMQ has
        released each of its pyzmq-tracked frames.

        Small frames are copied by libzmq (cheaper than tracking them); large ``bytes``
        are immutable, so they are sent zero-copy untracked; large views of the caller's
        memory are sent zero-copy and waited for: through ``hefl._zsend`` where it is
        built (one wake-up when ZeroMQ lets go), else as tracked ``zmq.Frame`` s. Its own
        function so that no stray local keeps a ``zmq.Frame`` alive: ZeroMQ releases a
        frame only once every reference to it is gone.
        """
        parts: list[tuple[Any, int]] = [(header, _COPY if len(header) < self.zero_copy_bytes
                                         else _ZERO_COPY)]
        sent: list[Any] = []
        for f in frames:
            mv = memoryview(f)
            if mv.nbytes < self.zero_copy_bytes:
                parts.append((f, _COPY))
            elif isinstance(f, bytes):
                parts.append((f, _ZERO_COPY))
            elif _ZSEND is not None and mv.c_contiguous:
                parts.append((f, _DIRECT))
            else:
                frame = zmq.Frame(f, track=True, copy=False)
                sent.append(frame.tracker_event)
                parts.append((frame, _ZERO_COPY))
        return parts, sent

    def _wait_step(self, timeout: float) -> None:
        """Called with ``_cond`` held: receive in this thread while waiting, if possible."""
        if timeout <= 0:
            return
        gen = self._gen
        self._router_wanted += 1
        self._cond.release()
        try:
            if self._router_lock.locked():
                self._wake()  # the I/O thread is polling the ROUTER: ask it to let go
            step = min(timeout, 0.05)
            if self._router_lock.acquire(timeout=step):
                try:
                    # Another thread may have delivered what we wait for meanwhile.
                    if self._gen == gen and not self._closed:
                        self._poll_router(step)
                finally:
                    self._router_lock.release()
        finally:
            self._cond.acquire()
            self._router_wanted -= 1

    def _check_send(self, peer: str, tag: str, deadline: float) -> None:
        st = self._peer_state(peer)
        if st.lost is not None:
            raise PeerLostError(f"while sending: {st.lost}", peer=peer, tag=tag)
        if self.closed:
            raise TransportError("channel closed while sending", peer=peer, tag=tag)
        if time.monotonic() > deadline:
            raise TimeoutError(f"send not accepted after {self.recv_timeout:.3g} s "
                               "(peer not reading or unreachable)", peer=peer, tag=tag)

    def close(self, linger: float | None = None) -> None:
        """Say ``bye`` to every peer, deliver what is queued (up to ``linger`` s), stop.

        Parameters
        ----------
        linger : float, optional
            Override the channel's ``linger``; ``0`` drops undelivered messages (use
            after an error).
        """
        if self.closed:
            return
        super().close()
        linger = self.linger if linger is None else float(linger)
        deadline = time.monotonic() + linger
        bye = wire.control_header(self.self_name, "bye")
        trackers: dict[str, Any] = {}
        for p, link in self._links.items():
            st = self._peer_state(p)
            with link.lock:
                link.closed = True
                if (st.seen or st.sent) and st.lost is None and not st.closed:
                    # "bye" goes behind the data, tracked: once ZeroMQ has written it out,
                    # everything sent before it is out too.
                    trackers[p] = self._send_bye(link.sock, bye, deadline)
        # Wait (up to linger) until each live peer has our data, has closed, or is lost.
        for p, tracker in trackers.items():
            st = self._peer_state(p)
            while tracker is not None and not tracker.done:
                if st.lost is not None or st.closed or time.monotonic() >= deadline:
                    break
                try:
                    tracker.wait(0.02)
                except zmq.NotDone:
                    pass
        for p, link in self._links.items():
            st = self._peer_state(p)
            delivered = p in trackers and trackers[p] is not None and trackers[p].done
            # A little linger in case the last bytes sat in ZeroMQ's encoder buffer.
            link.sock.close(linger=1000 if delivered and st.lost is None else 0)
        with self._lock:
            self._cmds.append(("stop", None))
        self._wake()
        self._thread.join(linger + 10.0)
        if self._thread.is_alive():  # pragma: no cover - libzmq stuck; do not hang the caller
            log.error("%s: transport thread did not stop", self.self_name)
            return
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:  # after this, _wake() is a no-op (never writes to a reused fd)
            try:
                os.close(fd)
            except OSError:
                pass

    @staticmethod
    def _send_bye(sock: zmq.Socket, bye: bytes, deadline: float) -> Any:
        frame = zmq.Frame(bye, track=True, copy=False)
        tracker = frame.tracker
        while True:
            try:
                sock.send(frame, zmq.NOBLOCK, copy=False)
                return tracker
            except zmq.Again:
                if time.monotonic() >= deadline:
                    return None
                sock.poll(20, zmq.POLLOUT)
            except zmq.ZMQError:
                return None

    # ------------------------------------------------------------------ I/O thread

    def _wake(self) -> None:
        fd = self._wake_w
        if fd < 0:
            return
        try:
            os.write(fd, b"\0")
        except OSError:
            pass  # pipe full (a wake-up is pending anyway) or closed

    def _io_main(self) -> None:
        try:
            self._io_loop()
        except BaseException as exc:
            log.exception("%s: transport thread failed", self.self_name)
            for p in self.peers:
                self._mark_lost(p, f"transport thread failed: {type(exc).__name__}: {exc}")

    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)
        beats: dict[str, zmq.Socket] = {}
        beat_peer: dict[zmq.Socket, str] = {}
        ping = wire.control_header(self.self_name, "ping", self.max_message_bytes)
        hello = wire.control_header(self.self_name, "hello", self.max_message_bytes)
        polling_router = False
        next_beat = time.monotonic()
        try:
            while True:
                wait = max(0.0, next_beat - time.monotonic())
                own = self._router_wanted == 0 and self._router_lock.acquire(blocking=False)
                if own != polling_router:
                    if own:
                        poller.register(self._router, zmq.POLLIN)
                    else:
                        poller.unregister(self._router)
                    polling_router = own
                try:
                    events = dict(poller.poll(int(wait * 1000)))
                    if own and self._router in events:
                        self._drain_router()
                finally:
                    if own:
                        self._router_lock.release()
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except OSError:
                        pass
                with self._lock:
                    cmds = list(self._cmds)
                    self._cmds.clear()
                if any(kind == "stop" for kind, _ in cmds):
                    return
                for _kind, arg in cmds:  # "adopt"
                    for p, d in arg.items():
                        beats[p] = d
                        beat_peer[d] = p
                        poller.register(d, zmq.POLLIN)
                        try:
                            d.send(hello, zmq.NOBLOCK)
                        except zmq.ZMQError:
                            pass
                for sock, ev in events.items():
                    if ev & zmq.POLLIN and sock in beat_peer:
                        self._drain_beats(sock, beat_peer[sock])
                if self._zap is not None and self._zap in events:
                    self._serve_zap()
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat(beats, ping, now)
                    next_beat = now + self.heartbeat_interval
        finally:
            for d in beats.values():
                d.close(linger=0)
            with self._router_lock:  # a receiving thread may be polling it right now
                self._router.close(linger=0)
            if self._zap is not None:
                self._zap.close(linger=0)
            # Waits for the data DEALERs' linger (closed by close()) to deliver.
            for lk in self._links.values():
                if not lk.closed:
                    with lk.lock:
                        lk.closed = True
                        lk.sock.close(linger=0)
            self._zctx.term()

    def _poll_router(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a message on the ROUTER and take what it holds;
        whether one came. Call with ``_router_lock`` held (under which the ROUTER is
        closed)."""
        router = self._router
        if router.closed:
            return False
        ms = int(timeout * 1000)
        if _ZSEND is not None:  # wait, and take what is there, in one call
            return self._take_batch(ms)
        if self._router_poller is None:
            self._router_poller = zmq.Poller()
            self._router_poller.register(router, _POLLIN)
        if not self._router_poller.poll(ms):
            return False
        self._drain_router()
        return True

    def _take_batch(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for a message, take up to ``_BATCH`` through
        ``hefl._zsend`` and route them; whether any came. Call with ``_router_lock``
        held, the ROUTER open."""
        got = _ZSEND.recv(self._router.underlying, timeout_ms, self._curve is not None,
                          _COPY_BELOW, _MAX_PARTS, _BATCH)
        if got is None:
            return False
        if type(got) is int:
            raise _zmq_error(-got)
        route = self._route
        for parts, user, complete in got:
            route(parts, user, complete)
        return True

    def _drain_router(self) -> None:
        """Take what the ROUTER holds (up to ``_BATCH`` messages). Call with
        ``_router_lock`` held (under which the ROUTER is closed)."""
        router = self._router
        if router.closed:
            return
        if _ZSEND is not None:
            self._take_batch(0)
            return
        recv = router.recv
        for i in range(_BATCH):
            # ZMQ_EVENTS: cheaper than a recv failing with zmq.Again (and than pyzmq's
            # router.get, which looks the option up in an enum on every call)
            if i and not router.get(_EVENTS) & _POLLIN:
                return
            try:
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            parts = [part]
            complete = True
            while part.more:  # the rest of a multipart message is there already
                part = recv(_NOBLOCK, copy=False)
                if len(parts) < _MAX_PARTS:
                    parts.append(part)
                else:
                    complete = False  # read off the socket, not kept
            user = None
            if self._curve is not None and len(parts) > 1:
                try:
                    user = parts[1].get("User-Id")
                except zmq.ZMQError:
                    pass
            parts[0] = parts[0].bytes
            self._route(parts, user, complete)

    def _route(self, parts: list[Any], user: str | None, complete: bool) -> None:
        """One message from the ROUTER: ``parts[0]`` the sender's routing id (bytes),
        then header and payload frames; ``user``: CurveZMQ's name for the sender's key;
        ``complete``: false when parts beyond ``_MAX_PARTS`` were dropped."""
        if len(parts) < 2:
            return
        ident = parts[0]
        known = self._idents.get(ident)
        if known is None:
            if ident not in self._unknown_logged and len(self._unknown_logged) < 100:
                self._unknown_logged.add(ident)
                log.warning("%s: dropped a message from unknown party %r", self.self_name,
                            ident[:64].decode("ascii", "replace"))
            return
        peer, beat = known
        if self._curve is not None and user != peer:
            log.warning("%s: dropped a message with routing id %r from the key of %r",
                        self.self_name, peer, user)
            return
        if beat:
            self._on_beat(peer, ident, parts, self._pong)
        elif complete:
            self._ingest(peer, parts[1], parts[2:])
        else:
            self._poison(peer, f"rejected message of more than {wire.MAX_FRAMES} frames", None)

    def _on_beat(self, peer: str, ident: bytes, parts: list[Any], pong: bytes) -> None:
        try:
            header = wire.parse_header(parts[1])
        except wire.BadMessage:
            return
        if header["src"] != peer or header["kind"] not in ("ping", "hello"):
            return
        self._touch(peer, wire.announced_limit(header))
        if header["kind"] == "ping":
            try:
                self._router.send_multipart([ident, pong], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # connection gone or full: the peer's own timeout will tell

    def _touch(self, peer: str, max_bytes: int | None = None) -> None:
        with self._mutex:
            st = self._peer_state(peer)
            first = not st.seen
            st.seen = True
            st.last_seen = time.monotonic()
            if max_bytes is not None:
                st.max_bytes = max_bytes
            if first:
                self._notify()

    def _drain_beats(self, dealer: zmq.Socket, peer: str) -> None:
        for _ in range(100):
            try:
                parts = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                header = wire.parse_header(parts[0])
            except wire.BadMessage:
                continue
            if header["kind"] == "pong" and header["src"] == peer:
                self._touch(peer, wire.announced_limit(header))

    def _serve_zap(self) -> None:
        assert self._zap is not None and self._curve is not None
        for _ in range(100):
            try:
                req = self._zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(req) < 6:
                self._zap.send_multipart([b"1.0", b"", b"500", b"bad ZAP request", b"", b""])
                continue
            request_id, address, mechanism, creds = req[1], req[3], req[5], req[6:]
            name = None
            if mechanism == b"CURVE" and len(creds) == 1:
                name = self._curve["allowed"].get(creds[0])
            if name is not None:
                self._zap.send_multipart([b"1.0", request_id, b"200", b"OK",
                                          name.encode("ascii"), b""])
                continue
            key = (zmq.utils.z85.encode(creds[0]).decode()
                   if len(creds) == 1 and len(creds[0]) == 32 else "?")
            entry = f"{address.decode(errors='replace')} {key}"
            first = entry not in self.denied
            if first and len(self.denied) < 1000:
                self.denied.append(entry)
            # ZeroMQ retries refused connections: say it once per address and key.
            log.log(logging.WARNING if first else logging.DEBUG,
                    "%s: refused a %s connection from %s (key %s not on the allow-list)",
                    self.self_name, mechanism.decode(errors="replace"),
                    address.decode(errors="replace"), key)
            self._zap.send_multipart([b"1.0", request_id, b"400", b"not on the allow-list",
                                      b"", b""])

    def _heartbeat(self, beats: dict[str, zmq.Socket], ping: bytes, now: float) -> None:
        for p, d in beats.items():
            st = self._peer_state(p)
            if not st.closed and st.lost is None:
                try:
                    d.send(ping, zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass  # not connected yet (queue full): the timeout will tell
        for p in self.peers:
            st = self._peer_state(p)
            if st.seen and not st.closed and st.lost is None:
                silent = now - st.last_seen
                if silent > self.heartbeat_timeout:
                    self._mark_lost(p, f"no heartbeat for {silent:.1f} s (process died or "
                                       "network down)")
