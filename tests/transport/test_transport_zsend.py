"""hefl._zsend: zero-copy sends that wake the sender when ZeroMQ releases the buffer."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from hefl.transport import zmq_channel

zsend = pytest.importorskip("hefl._zsend", reason="hefl._zsend is not built here")

NOBLOCK = int(zmq.NOBLOCK)


def _resizable(buf: bytearray) -> bool:
    """A bytearray cannot change size while some buffer of it is exported (pinned)."""
    try:
        buf.append(0)
    except BufferError:
        return False
    buf.pop()
    return True


@pytest.fixture
def dealer():
    """``dealer()``: a DEALER whose messages ZeroMQ queues (connected to a free port nobody
    listens on); ``dealer(connect=False)``: one that cannot queue anything. All closed after."""
    ctx = zmq.Context()
    made: list[zmq.Socket] = []

    def make(connect: bool = True) -> zmq.Socket:
        d = ctx.socket(zmq.DEALER)
        made.append(d)
        if connect:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            d.connect(f"tcp://127.0.0.1:{port}")
        return d

    yield make
    for d in made:
        d.close(linger=0)
    ctx.term()


def test_bound_to_the_libzmq_pyzmq_uses():
    from zmq.backend.cython import _zmq

    assert zsend.bind(_zmq.__file__, zmq.zmq_version_info()) == zmq.zmq_version_info()
    assert zmq_channel._ZSEND is zsend


def test_bind_refuses_another_version_and_keeps_working():
    from zmq.backend.cython import _zmq

    with pytest.raises(OSError, match="pyzmq reports 3.9.9"):
        zsend.bind(_zmq.__file__, (3, 9, 9))
    with pytest.raises(OSError, match="not loaded"):
        zsend.bind("/nonexistent/_zmq.so", zmq.zmq_version_info())
    test_frame_arrives_and_is_released_once_sent()  # the earlier binding still stands


@contextlib.contextmanager
def _router_dealer():
    """A ROUTER and a DEALER connected to it over loopback; closed after."""
    ctx = zmq.Context()
    r, d = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = r.bind_to_random_port("tcp://127.0.0.1")
        d.connect(f"tcp://127.0.0.1:{port}")
        yield r, d
    finally:
        d.close(linger=0)
        r.close(linger=0)
        ctx.term()


def test_frame_arrives_and_is_released_once_sent():
    with _router_dealer() as (r, d):
        data = bytearray(np.arange(50_000, dtype=np.int64).tobytes())
        d.send(b"head", zmq.SNDMORE)
        err, sent = zsend.send(d.underlying, data, NOBLOCK)
        assert err == 0
        assert not _resizable(data)  # pinned while ZeroMQ may read it
        parts = r.recv_multipart()
        assert parts[1] == b"head" and parts[2] == bytes(data)
        assert sent.wait(5.0) and sent.done
        assert _resizable(data)  # released: the caller owns its memory again


def test_held_frame_waits_then_is_released_when_the_socket_closes(dealer):
    d = dealer()
    data = bytearray(200_000)
    err, sent = zsend.send(d.underlying, data, NOBLOCK)
    assert err == 0
    assert sent.wait(0.05) is False and not sent.done
    assert not _resizable(data)
    d.close(linger=0)  # drops the queued message: ZeroMQ lets go of the buffer
    assert sent.wait(5.0) and _resizable(data)


def test_sent_object_dropped_before_release_keeps_the_buffer_pinned(dealer):
    d = dealer()
    data = bytearray(200_000)
    before = zsend.orphans()
    err, sent = zsend.send(d.underlying, data, NOBLOCK)
    assert err == 0
    del sent  # e.g. the send timed out: ZeroMQ still holds the memory
    assert zsend.orphans() == before + 1
    assert not _resizable(data)
    d.close(linger=0)
    deadline = time.monotonic() + 5
    while zsend.orphans() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert zsend.orphans() == before and _resizable(data)


def test_refused_send_returns_the_error_and_releases_the_buffer(dealer):
    d = dealer(connect=False)  # not connected: a DEALER cannot queue anything
    data = bytearray(200_000)
    err, sent = zsend.send(d.underlying, data, NOBLOCK)
    assert err == errno.EAGAIN and sent is None
    assert _resizable(data)


def test_bad_arguments():
    with pytest.raises(ValueError, match="null socket"):
        zsend.send(0, b"x", 0)
    with pytest.raises(TypeError):
        zsend.send(1, object(), 0)


def test_wait_with_odd_timeouts(dealer):
    d = dealer()
    err, sent = zsend.send(d.underlying, bytearray(200_000), NOBLOCK)
    assert err == 0
    t = time.monotonic()
    assert sent.wait(float("nan")) is False and sent.wait(-5.0) is False
    assert time.monotonic() - t < 1.0
    d.close(linger=0)
    assert sent.wait(float("inf")) is True  # released already: no wait, no overflow


def test_sweep_survives_a_finalizer_that_sends_again(dealer):
    """Releasing an orphan's buffer can run Python code that sends (and sweeps) again.

    Run under Python's debug allocator, which poisons freed memory: a sweep reading a
    node that the nested sweep freed crashes there rather than passing by luck.
    """
    if os.environ.get("PYTHONMALLOC") != "debug":
        here = f"{__file__}::test_sweep_survives_a_finalizer_that_sends_again"
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", here],
                             env={**os.environ, "PYTHONMALLOC": "debug"}, capture_output=True,
                             text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return
    d_a, d_x, d_n = dealer(), dealer(), dealer()
    ran = []

    class Trigger(bytearray):
        def __del__(self):  # runs inside the outer sweep
            d_x.close(linger=0)  # the orphan before it in the list gets released too...
            time.sleep(0.3)  # ...by ZeroMQ's own thread: let it, so the nested sweep frees it
            err, _sent = zsend.send(d_n.underlying, bytearray(200_000), NOBLOCK)
            ran.append(err)

    t = Trigger(200_000)
    err, s = zsend.send(d_a.underlying, t, NOBLOCK)
    assert err == 0
    del s, t  # orphan A: its view holds the last reference to the Trigger
    err, s = zsend.send(d_x.underlying, bytearray(200_000), NOBLOCK)
    assert err == 0
    del s  # orphan X
    d_a.close(linger=0)
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        zsend.orphans()  # sweeps: frees A, whose finalizer sends and sweeps again
        time.sleep(0.01)
    assert ran == [0]
    d_n.close(linger=0)
    while zsend.orphans() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert zsend.orphans() == 0


def test_receiving_without_zsend_uses_pyzmq(monkeypatch):
    """The fallback (no hefl._zsend): pyzmq's Poller, frame by frame, same messages."""
    monkeypatch.setattr(zmq_channel, "_ZSEND", None)
    a = zmq_channel.ZmqChannel("alice", ["bob"], heartbeat_timeout=5.0)
    b = zmq_channel.ZmqChannel("bob", ["alice"], heartbeat_timeout=5.0)
    try:
        a.connect({"bob": b.bound_address})
        b.connect({"alice": a.bound_address})
        for i in range(50):
            a.send("bob", f"m{i}", np.full(1000, i))
        assert [int(b.recv("alice", f"m{i}", timeout=10)[0]) for i in range(50)] == list(range(50))
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_an_older_zsend_build_is_not_used(monkeypatch):
    """A stale extension without the receive helpers: pyzmq throughout, not AttributeError."""
    import types

    old = types.ModuleType("hefl._zsend")
    old.bind, old.send = zsend.bind, zsend.send
    monkeypatch.setitem(sys.modules, "hefl._zsend", old)
    monkeypatch.setattr("hefl._zsend", old, raising=False)
    assert zmq_channel._bind_zsend() is None


# ----------------------------------------------------------------------------- whole messages


def test_send_multipart_and_recv_round_trip():
    with _router_dealer() as (r, d):
        pinned = bytearray(np.arange(25_000, dtype=np.int64).tobytes())  # 200 kB, zero-copy
        immutable = bytes(range(256)) * 1200  # 300 kB, zero-copy, nothing to wait for
        parts = [b"header", b"x" * 100, pinned, memoryview(immutable), immutable, b""]
        err, sents = zsend.send_multipart(d.underlying, parts, 65536)
        assert err == 0 and len(sents) == 2  # the bytearray and the memoryview
        got = zsend.recv(r.underlying, 5000, False, 4096, 100, 10)
        assert got is not None and len(got) == 1
        received, user, complete = got[0]
        assert user is None and complete is True
        assert [bytes(p) for p in received[1:]] == [bytes(p) for p in parts]
        small = [p for p in received if type(p) is bytes]
        large = [p for p in received if type(p) is not bytes]
        assert len(small) == 4 and len(large) == 3  # routing id, 3 small parts; 3 large
        assert all(len(p) == memoryview(p).nbytes for p in large)
        arr = np.frombuffer(received[3], dtype=np.int64)
        assert arr.flags.writeable and arr[-1] == 24_999  # writable, no copy needed
        del received, got, large
        arr[0] = 7  # the array keeps ZeroMQ's memory alive, and it is ours
        assert arr[0] == 7 and arr[-1] == 24_999
        assert all(s.wait(5.0) for s in sents) and _resizable(pinned)


def test_recv_waits_its_timeout_takes_batches_and_keeps_the_socket_in_step():
    with _router_dealer() as (r, d):
        addr = r.underlying
        assert zsend.recv(addr, 0, False, 4096, 100, 10) is None
        t = time.monotonic()
        assert zsend.recv(addr, 50, False, 4096, 100, 10) is None
        assert time.monotonic() - t >= 0.04
        d.send_multipart([b"p%d" % i for i in range(10)])
        for i in range(4):
            d.send_multipart([b"next", b"%d" % i])
        got: list = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            batch = zsend.recv(addr, 100, False, 4096, 4, 2)
            if batch is not None:
                assert 1 <= len(batch) <= 2  # at most max_msgs a call
                got += batch
        # the long message cut to 4 parts (the rest read and dropped), then the others
        assert [(p[1:], c) for p, _, c in got] == (
            [([b"p0", b"p1", b"p2"], False)] + [([b"next", b"%d" % i], True) for i in range(4)])
        assert zsend.recv(addr, 0, False, 4096, 4, 2) is None
        with pytest.raises(ValueError, match="null socket"):
            zsend.recv(0, 0, False, 4096, 4, 1)


def test_send_multipart_refusals_send_nothing(dealer):
    d = dealer(connect=False)  # cannot queue anything: the first part is refused
    data = bytearray(200_000)
    assert zsend.send_multipart(d.underlying, [b"h", data], 65536) == (errno.EAGAIN, None)
    assert _resizable(data)  # not pinned
    with _router_dealer() as (r, d2):
        strided = np.arange(100_000, dtype=np.int64)[::2]  # not C-contiguous: the other path
        assert zsend.send_multipart(d2.underlying, [b"h", b"x", memoryview(strided)], 10) is None
        assert zsend.send_multipart(d2.underlying, [b"h", object()], 10) is None
        assert zsend.recv(r.underlying, 100, False, 4096, 10, 10) is None  # nothing went out
    with pytest.raises(ValueError, match="at least one part"):
        zsend.send_multipart(d.underlying, [], 10)
    with pytest.raises(TypeError):
        zsend.send_multipart(d.underlying, (b"h",), 10)
    with pytest.raises(ValueError, match="null socket"):
        zsend.send_multipart(0, [b"h"], 10)
