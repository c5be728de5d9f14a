"""hefl._zsend: zero-copy sends that wake the sender when ZeroMQ releases the buffer."""

from __future__ import annotations

import errno
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


def test_bound_to_the_libzmq_pyzmq_uses():
    path, version = zsend.bind()
    assert "libzmq" in path and version == zmq.zmq_version_info()
    assert zmq_channel._ZSEND is zsend


def test_frame_arrives_and_is_released_once_sent():
    ctx = zmq.Context()
    r, d = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = r.bind_to_random_port("tcp://127.0.0.1")
        d.connect(f"tcp://127.0.0.1:{port}")
        data = bytearray(np.arange(50_000, dtype=np.int64).tobytes())
        d.send(b"head", zmq.SNDMORE)
        err, sent = zsend.send(d.underlying, data, NOBLOCK)
        assert err == 0
        assert not _resizable(data)  # pinned while ZeroMQ may read it
        parts = r.recv_multipart()
        assert parts[1] == b"head" and parts[2] == bytes(data)
        assert sent.wait(5.0) and sent.done
        assert _resizable(data)  # released: the caller owns its memory again
    finally:
        d.close(linger=0)
        r.close(linger=0)
        ctx.term()


def test_held_frame_waits_then_is_released_when_the_socket_closes():
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    try:
        d.connect("tcp://127.0.0.1:9")  # nobody there: ZeroMQ queues the message
        data = bytearray(200_000)
        err, sent = zsend.send(d.underlying, data, NOBLOCK)
        assert err == 0
        assert sent.wait(0.05) is False and not sent.done
        assert not _resizable(data)
        d.close(linger=0)  # drops the queued message: ZeroMQ lets go of the buffer
        assert sent.wait(5.0) and _resizable(data)
    finally:
        d.close(linger=0)
        ctx.term()


def test_sent_object_dropped_before_release_keeps_the_buffer_pinned():
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    try:
        d.connect("tcp://127.0.0.1:9")
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
    finally:
        d.close(linger=0)
        ctx.term()


def test_refused_send_returns_the_error_and_releases_the_buffer():
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)  # not connected: a DEALER cannot queue anything
    try:
        data = bytearray(200_000)
        err, sent = zsend.send(d.underlying, data, NOBLOCK)
        assert err == errno.EAGAIN and sent is None
        assert _resizable(data)
    finally:
        d.close(linger=0)
        ctx.term()


def test_bad_arguments():
    with pytest.raises(ValueError, match="null socket"):
        zsend.send(0, b"x", 0)
    with pytest.raises(TypeError):
        zsend.send(1, object(), 0)
