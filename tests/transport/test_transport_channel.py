"""Channel rules (shared by every transport), exercised on the in-memory channel."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from hefl.errors import PeerLostError, ProtocolError, TimeoutError, TransportError
from hefl.transport import MemoryHub, wire


@pytest.fixture
def pair():
    hub = MemoryHub(["alice", "bob"], recv_timeout=5.0)
    a, b = hub.channel("alice"), hub.channel("bob")
    yield a, b
    a.close()
    b.close()


def test_roundtrip_and_independence(pair):
    a, b = pair
    x = np.arange(10.0)
    a.send("bob", "x", x)
    x[:] = -1  # the receiver must not see this
    got = b.recv("alice", "x")
    assert np.array_equal(got, np.arange(10.0))
    got[0] = 42  # received arrays are writable
    assert a.peers == ["bob"] and b.self_name == "bob"


def test_out_of_order_tags_are_buffered(pair):
    a, b = pair
    for i in range(5):
        a.send("bob", f"m{i}", i)
    assert [b.recv("alice", f"m{i}") for i in reversed(range(5))] == [4, 3, 2, 1, 0]


def test_duplicate_send_refused(pair):
    a, _ = pair
    a.send("bob", "x", 1)
    with pytest.raises(ProtocolError, match="already sent") as ei:
        a.send("bob", "x", 2)
    assert (ei.value.peer, ei.value.tag) == ("bob", "x")


def test_duplicate_recv_refused(pair):
    a, b = pair
    a.send("bob", "x", 1)
    assert b.recv("alice", "x") == 1
    with pytest.raises(ProtocolError, match="already received"):
        b.recv("alice", "x", timeout=0.1)


def test_peer_sending_a_tag_twice_is_an_error(pair):
    _, b = pair
    header, frames, _ = wire.build_message("alice", "x", 1)
    b._ingest("alice", header, [bytearray(f) for f in frames])
    b._ingest("alice", header, [bytearray(f) for f in frames])
    with pytest.raises(ProtocolError, match="twice") as ei:
        b.recv("alice", "x", timeout=1)
    assert ei.value.peer == "alice"


def test_duplicate_after_consumed_is_an_error(pair):
    _, b = pair
    header, frames, _ = wire.build_message("alice", "x", 1)
    b._ingest("alice", header, list(frames))
    assert b.recv("alice", "x") == 1
    b._ingest("alice", header, list(frames))
    with pytest.raises(ProtocolError, match="twice"):
        b.recv("alice", "y", timeout=1)


def test_timeout_names_peer_tag_and_what_came_instead(pair):
    a, b = pair
    a.send("bob", "tree-2/hist", 1)
    t = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        b.recv("alice", "tree-1/hist", timeout=0.2)
    assert time.monotonic() - t < 2
    e = ei.value
    assert (e.peer, e.tag) == ("alice", "tree-1/hist")
    assert "tree-2/hist" in str(e)
    assert isinstance(e, TransportError)


def test_closed_peer_fails_fast(pair):
    a, b = pair
    a.send("bob", "sent", 1)
    a.close()
    assert b.recv("alice", "sent") == 1  # buffered before the bye: still delivered
    t = time.monotonic()
    with pytest.raises(PeerLostError) as ei:
        b.recv("alice", "never", timeout=30)
    assert time.monotonic() - t < 1
    assert (ei.value.peer, ei.value.tag) == ("alice", "never")


def test_lost_peer_wakes_blocked_receiver():
    hub = MemoryHub(["alice", "bob"], recv_timeout=30)
    a, b = hub.channel("alice"), hub.channel("bob")
    threading.Timer(0.2, hub.fail, args=("alice", "simulated crash")).start()
    t = time.monotonic()
    with pytest.raises(PeerLostError, match="simulated crash"):
        b.recv("alice", "x")
    assert time.monotonic() - t < 5
    a.close()
    b.close()


def test_unknown_peer_and_bad_tag(pair):
    a, _ = pair
    with pytest.raises(ProtocolError, match="unknown peer"):
        a.send("mallory", "x", 1)
    with pytest.raises(ProtocolError, match="invalid tag"):
        a.send("bob", "a//b", 1)
    with pytest.raises(TypeError, match="cannot be sent"):
        a.send("bob", "x", object())
    a.send("bob", "x", 1)  # the failed attempts did not use up the tag


def test_oversized_message_refused_both_ways():
    hub = MemoryHub(["alice", "bob"], recv_timeout=2, max_message_bytes=1000)
    a, b = hub.channel("alice"), hub.channel("bob")
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        a.send("bob", "big", np.zeros(1000))
    header, frames, _ = wire.build_message("alice", "big", np.zeros(1000))
    b._ingest("alice", header, [bytearray(f) for f in frames])
    with pytest.raises(ProtocolError, match="exceeds the limit") as ei:
        b.recv("alice", "big")
    assert (ei.value.peer, ei.value.tag) == ("alice", "big")


def test_a_message_over_the_peers_own_limit_fails_at_the_sender():
    hub = MemoryHub(["alice", "bob"], recv_timeout=2)
    a, b = hub.channel("alice"), hub.channel("bob", max_message_bytes=1000)
    with pytest.raises(ProtocolError, match="peer's limit of 1000") as ei:
        a.send("bob", "big", np.zeros(1000))
    assert (ei.value.peer, ei.value.tag) == ("bob", "big")
    a.send("bob", "big", np.zeros(10))  # the tag was not used up
    assert b.recv("alice", "big").shape == (10,)


def test_buffer_is_bounded():
    hub = MemoryHub(["alice", "bob"], recv_timeout=2, max_buffered_messages=10)
    a, b = hub.channel("alice"), hub.channel("bob")
    for i in range(11):
        a.send("bob", f"m{i}", i)
    with pytest.raises(ProtocolError, match="nobody asked for"):
        b.recv("alice", "other")


def test_malformed_header_poisons_sender(pair):
    _, b = pair
    b._ingest("alice", b"\x80\x04not json", [])
    with pytest.raises(ProtocolError, match="not valid") as ei:
        b.recv("alice", "x", timeout=5)
    assert (ei.value.peer, ei.value.tag) == ("alice", "x")


def test_spoofed_sender_rejected(pair):
    _, b = pair
    header, frames, _ = wire.build_message("carol", "x", 1)
    b._ingest("alice", header, list(frames))
    with pytest.raises(ProtocolError, match="claiming"):
        b.recv("alice", "x", timeout=5)


def test_recv_many_any_order():
    hub = MemoryHub(["a", "b", "c"], recv_timeout=5)
    ca, cb, cc = (hub.channel(n) for n in "abc")
    cc.send("a", "t", "from c")
    threading.Timer(0.1, cb.send, args=("a", "t", "from b")).start()
    assert ca.recv_many(["b", "c"], "t") == {"b": "from b", "c": "from c"}
    cb.multicast(["a", "c"], "u", np.arange(3))
    assert np.array_equal(cc.recv("b", "u"), np.arange(3))


def test_closed_channel_refuses(pair):
    a, _ = pair
    a.close()
    with pytest.raises(TransportError, match="closed"):
        a.send("bob", "x", 1)
    a.close()  # idempotent


def test_close_wakes_own_blocked_receiver():
    hub = MemoryHub(["alice", "bob"], recv_timeout=30)
    a, _b = hub.channel("alice"), hub.channel("bob")
    threading.Timer(0.2, a.close).start()
    with pytest.raises(TransportError, match="closed"):
        a.recv("bob", "x")


def test_cipher_payload_needs_registered_kit(pair):
    _, b = pair
    header, _ = (json.dumps({"v": 1, "src": "alice", "kind": "msg", "tag": "ct",
                             "body": {"k": "cipher", "f": [0],
                                      "meta": {"fingerprint": "0" * 32}},
                             "sizes": [8]}).encode(), None)
    b._ingest("alice", header, [bytearray(8)])
    with pytest.raises(ProtocolError, match="not registered") as ei:
        b.recv("alice", "ct")
    assert (ei.value.peer, ei.value.tag) == ("alice", "ct")





def test_two_threads_receiving_one_tag_one_gets_it_the_other_fails_fast(pair):
    a, b = pair
    out: dict[int, object] = {}

    def take(i: int) -> None:
        try:
            out[i] = b.recv("alice", "same", timeout=5.0)
        except ProtocolError as exc:
            out[i] = exc

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # both are waiting
    t0 = time.monotonic()
    a.send("bob", "same", 42)
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 2.0  # not the 5 s timeout
    assert len(out) == 2 and any(v == 42 for v in out.values())
    assert any(isinstance(v, ProtocolError) and "already received" in str(v) for v in out.values())


@pytest.mark.parametrize("case", ["wrong_size", "two_frames", "bad_dtype", "spoofed"])
def test_one_array_messages_are_checked_like_any_other(pair, case):
    """Headers of one array take a faster parser; what does not fit is rejected all the same."""
    _, b = pair
    header, frames, _ = wire.build_message("mallory" if case == "spoofed" else "alice", "x",
                                           np.arange(3.0))
    assert wire.parse_nd_header(header) is not None
    frames = [bytearray(f) for f in frames]
    if case == "wrong_size":
        frames = [frames[0][:16]]
    elif case == "two_frames":
        frames.append(bytearray(8))
    elif case == "bad_dtype":
        header = header.replace(b"<f8", b"<f3")
    b._ingest("alice", header, frames)
    with pytest.raises(ProtocolError, match="claiming" if case == "spoofed" else "rejected") as ei:
        b.recv("alice", "x", timeout=1)
    assert ei.value.peer == "alice" and ei.value.tag == "x"
    good, gframes, _ = wire.build_message("alice", "y", np.arange(3.0))
    b._ingest("alice", good, [bytearray(f) for f in gframes])
    if case == "spoofed":  # the link is poisoned: nothing more is taken from it
        with pytest.raises(ProtocolError, match="claiming"):
            b.recv("alice", "y", timeout=1)
    else:  # only that tag was bad
        assert b.recv("alice", "y").tolist() == [0.0, 1.0, 2.0]
