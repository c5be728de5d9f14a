"""PartyContext semantics, run over in-memory channels (run_threads)."""

from __future__ import annotations

import numpy as np
import pytest

from hefl.errors import PeerLostError, ProtocolError, TimeoutError
from hefl.federation import PartyContext, run_threads
from hefl.transport import MemoryHub


def test_three_parties_all_directions():
    def party(ctx):
        for p in ctx.peers:
            ctx.send(p, "hello", f"{ctx.self_name}->{p}")
        return {p: ctx.recv(p, "hello") for p in ctx.peers}

    out = run_threads({n: party for n in ("a", "b", "c")})
    assert out == {"a": {"b": "b->a", "c": "c->a"}, "b": {"a": "a->b", "c": "c->b"},
                   "c": {"a": "a->c", "b": "b->c"}}


def test_identity_and_namespaces():
    hub = MemoryHub(["alice", "bob"], recv_timeout=5)
    a, b = PartyContext(hub.channel("alice")), PartyContext(hub.channel("bob"))
    assert a.self_name == "alice" and a.peers == ["bob"]
    t3 = a.sub("tree-3")
    assert t3.tag("hist") == "tree-3/hist" and t3.sub("level-2").prefix == "tree-3/level-2/"
    t3.send("bob", "hist", 1)
    a.sub("tree-4").send("bob", "hist", 2)  # same short tag, other namespace: fine
    a.send("bob", "hist", 3)
    assert b.sub("tree-4").recv("alice", "hist") == 2
    assert b.recv("alice", "hist") == 3
    assert b.sub("tree-3").recv("alice", "hist") == 1
    for bad in ("", "a/b", "..", "x y"):
        with pytest.raises(ValueError):
            a.sub(bad)


def test_contexts_refuse_duplicate_tags():
    hub = MemoryHub(["alice", "bob"], recv_timeout=5)
    a, b = PartyContext(hub.channel("alice")), PartyContext(hub.channel("bob"))
    s = a.sub("round-1")
    s.send("bob", "g", 1)
    with pytest.raises(ProtocolError, match="already sent"):
        a.sub("round-1").send("bob", "g", 2)  # the same full tag, built twice
    with pytest.raises(ProtocolError, match="already sent"):
        a.send("bob", "round-1/g", 3)
    assert b.sub("round-1").recv("alice", "g") == 1
    with pytest.raises(ProtocolError, match="already received"):
        b.recv("alice", "round-1/g")


def test_broadcast_and_gather():
    def leader(ctx):
        ctx.broadcast("w", np.arange(4))
        return ctx.gather("g")

    def follower(ctx):
        w = ctx.recv("leader", "w")
        ctx.send("leader", "g", int(w.sum()) + len(ctx.self_name))

    out = run_threads({"leader": leader, "f1": follower, "f22": follower})
    assert out["leader"] == {"f1": 8, "f22": 9}


def test_broadcast_subset_and_gather_subset():
    def a(ctx):
        ctx.broadcast("x", "only b", peers=["b"])
        return ctx.gather("y", peers=["c"])

    def b(ctx):
        return ctx.recv("a", "x")

    def c(ctx):
        ctx.send("a", "y", 5)

    assert run_threads({"a": a, "b": b, "c": c}) == {"a": {"c": 5}, "b": "only b", "c": None}


def test_gather_fails_fast_when_any_peer_is_gone():
    def a(ctx):
        return ctx.gather("x", timeout=30)

    def b(ctx):
        raise RuntimeError("b crashed")

    def c(ctx):
        ctx.send("a", "x", 1)

    with pytest.raises(RuntimeError, match="b crashed") as ei:
        run_threads({"a": a, "b": b, "c": c}, timeout=30)
    assert "raised by party 'b'" in "".join(getattr(ei.value, "__notes__", []))


def test_recv_timeout_override():
    def a(ctx):
        with pytest.raises(TimeoutError) as ei:
            ctx.recv("b", "never", timeout=0.1)
        assert (ei.value.peer, ei.value.tag) == ("b", "never")
        with pytest.raises(TimeoutError):
            ctx.with_timeout(0.1).sub("ns").recv("b", "never")
        ctx.send("b", "done", True)

    def b(ctx):
        return ctx.recv("a", "done")

    assert run_threads({"a": a, "b": b})["b"] is True


def test_barrier():
    order = []

    def party(ctx):
        order.append(("before", ctx.self_name))
        ctx.barrier("sync")
        order.append(("after", ctx.self_name))

    run_threads({n: party for n in "xyz"})
    assert [k for k, _ in order[:3]] == ["before"] * 3


def test_run_threads_peer_lost_and_timeout():
    def waits(ctx):
        return ctx.recv("quits", "x")

    def quits(ctx):
        return "done without sending"

    with pytest.raises(PeerLostError, match="closed") as ei:
        run_threads({"waits": waits, "quits": quits}, timeout=10)
    assert (ei.value.peer, ei.value.tag) == ("quits", "x")

    def slow(ctx):
        return ctx.recv(ctx.peers[0], "never")

    with pytest.raises(TimeoutError, match="did not finish"):
        run_threads({"slow": slow, "other": slow}, timeout=0.5, recv_timeout=30)
