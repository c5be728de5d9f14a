"""run_local: one process per party on loopback; failures surface and nothing is left."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from hefl.errors import PeerLostError, ProtocolError, TimeoutError
from hefl.federation import PartyContext, RemoteTraceback, run_local

FAST = {"heartbeat_interval": 0.1, "heartbeat_timeout": 1.0}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True


def _wait_dead(pids, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_three_parties_exchange_in_all_directions_with_closures():
    data = {"a": np.arange(5.0), "b": np.ones(3, dtype=np.int16), "c": {"k": [1, 2]}}

    def make(me):
        def fn(ctx):  # a closure over `data` and `me`: needs the fork start method
            for p in ctx.peers:
                ctx.sub("round").send(p, "x", data[me])
            got = ctx.sub("round").gather("x")
            return me, os.getpid(), got

        return fn

    out = run_local({n: make(n) for n in data}, timeout=60, **FAST)
    pids = {out[n][1] for n in data}
    assert len(pids) == 3 and os.getpid() not in pids
    for me in data:
        assert out[me][0] == me
        for p, v in out[me][2].items():
            if isinstance(data[p], np.ndarray):
                assert np.array_equal(v, data[p]) and v.dtype == data[p].dtype
            else:
                assert v == data[p]
    assert _wait_dead(pids)


def _raiser(ctx):
    ctx.send("waiter", "hi", 1)
    raise KeyError("missing column 'age'")


def _waiter(ctx):
    ctx.recv("raiser", "hi")
    return ctx.recv("raiser", "never")


def test_first_error_is_raised_with_type_traceback_and_party():
    t = time.monotonic()
    with pytest.raises(KeyError, match="age") as ei:
        run_local({"raiser": _raiser, "waiter": _waiter}, timeout=60, **FAST)
    assert time.monotonic() - t < 20
    e = ei.value
    assert isinstance(e.__cause__, RemoteTraceback)
    assert "_raiser" in str(e.__cause__) and "missing column" in str(e.__cause__)
    assert any("raiser" in n for n in e.__notes__)


def test_dead_party_is_reported_and_others_stopped(tmp_path):
    def victim(ctx):
        ctx.send("survivor", "m1", 1)
        ctx.recv("survivor", "go")
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-protocol

    def survivor(ctx):
        (tmp_path / "survivor.pid").write_text(str(os.getpid()))
        ctx.recv("victim", "m1")
        ctx.send("victim", "go", 1)
        return ctx.recv("victim", "m2")

    t = time.monotonic()
    with pytest.raises(PeerLostError, match="SIGKILL") as ei:
        run_local({"victim": victim, "survivor": survivor}, timeout=60, recv_timeout=30, **FAST)
    assert time.monotonic() - t < 20
    assert ei.value.peer == "victim"
    assert _wait_dead([int((tmp_path / "survivor.pid").read_text())])


def test_no_orphans_after_failure(tmp_path):
    def spawner(ctx):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (tmp_path / "grandchild.pid").write_text(str(child.pid))
        (tmp_path / "spawner.pid").write_text(str(os.getpid()))
        ctx.send("failer", "ready", 1)
        return ctx.recv("failer", "never")

    def failer(ctx):
        ctx.recv("spawner", "ready")
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_local({"spawner": spawner, "failer": failer}, timeout=60, **FAST)
    pids = [int((tmp_path / f).read_text()) for f in ("grandchild.pid", "spawner.pid")]
    assert _wait_dead(pids), "a party or its child outlived run_local"


def test_overall_timeout_stops_everything(tmp_path):
    def sleeper(ctx):
        (tmp_path / f"{ctx.self_name}.pid").write_text(str(os.getpid()))
        time.sleep(60)

    t = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish"):
        run_local({"p": sleeper, "q": sleeper}, timeout=1.5, **FAST)
    assert time.monotonic() - t < 10
    pids = [int((tmp_path / f"{n}.pid").read_text()) for n in "pq"]
    assert _wait_dead(pids)


def test_unpicklable_result_and_system_exit():
    def bad_result(ctx):
        return lambda: 1

    def ok(ctx):
        return 1

    with pytest.raises(TypeError, match="cannot be returned"):
        run_local({"bad": bad_result, "ok": ok}, timeout=30, **FAST)

    def exits(ctx):
        sys.exit(3)

    with pytest.raises(RuntimeError, match="SystemExit"):
        run_local({"exits": exits, "ok": ok}, timeout=30, **FAST)


def test_curve_run_local():
    def a(ctx):
        ctx.send("b", "x", np.arange(3))
        return ctx.channel.encrypted

    def b(ctx):
        return ctx.recv("a", "x").tolist()

    assert run_local({"a": a, "b": b}, curve_keys=True, timeout=60, **FAST) == {
        "a": True, "b": [0, 1, 2]}


def test_protocol_error_crosses_process_boundary():
    def a(ctx):
        ctx.send("b", "x", 1)
        ctx.send("b", "x", 2)

    def b(ctx):
        return ctx.recv("a", "x")

    with pytest.raises(ProtocolError, match="already sent") as ei:
        run_local({"a": a, "b": b}, timeout=30, **FAST)
    assert (ei.value.peer, ei.value.tag) == ("b", "x")


# ----------------------------------------------------------------------------- deployment


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _deployed_bob(addresses, keys, q):
    ctx = PartyContext.connect("bob", addresses, curve_secret_key=keys["bob"][1],
                               curve_public_keys={"alice": keys["alice"][0]},
                               recv_timeout=20, **FAST)
    x = ctx.recv("alice", "x")
    ctx.send("alice", "y", x * 2)
    q.put("sent")
    time.sleep(60)  # killed mid-protocol by the test


def test_connect_for_deployment_and_peer_loss():
    from hefl.transport import generate_keypair

    keys = {n: generate_keypair() for n in ("alice", "bob")}
    pa, pb = _free_ports(2)
    addresses = {"alice": f"tcp://127.0.0.1:{pa}", "bob": f"tcp://127.0.0.1:{pb}"}
    ctx_mp = mp.get_context("fork")
    q = ctx_mp.Queue()
    proc = ctx_mp.Process(target=_deployed_bob, args=(addresses, keys, q))
    proc.start()
    try:
        ctx = PartyContext.connect("alice", addresses, curve_secret_key=keys["alice"][1],
                                   curve_public_keys={"bob": keys["bob"][0]},
                                   recv_timeout=20, **FAST)
        assert ctx.channel.encrypted
        ctx.send("bob", "x", np.arange(4))
        assert ctx.recv("bob", "y").tolist() == [0, 2, 4, 6]
        assert q.get(timeout=10) == "sent"
        os.kill(proc.pid, signal.SIGKILL)
        t = time.monotonic()
        with pytest.raises(PeerLostError) as ei:
            ctx.sub("phase-2").recv("bob", "z")
        assert time.monotonic() - t < FAST["heartbeat_timeout"] + 3
        assert (ei.value.peer, ei.value.tag) == ("bob", "phase-2/z")
        ctx.close()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)


class _NoArgs(Exception):
    def __str__(self):  # a bug in user code: IndexError when raised without arguments
        return self.args[0]


class _TwoArgs:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __reduce__(self):  # pickles, but cannot be rebuilt
        return (_TwoArgs, (self.a,))


def test_a_party_that_dies_while_its_forked_children_live_is_seen_at_once():
    # the children hold copies of the party's pipe and sentinel, so neither fired
    def alice(ctx):
        return "done"

    def bob(ctx):
        if os.fork() == 0:  # a child that outlives its parent for a while
            time.sleep(30)
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)

    t = time.monotonic()
    with pytest.raises(PeerLostError, match="killed by signal SIGKILL") as info:
        run_local({"alice": alice, "bob": bob}, timeout=60, **FAST)
    assert info.value.peer == "bob" and time.monotonic() - t < 15


def test_reports_that_cannot_be_shown_or_read_back_still_name_the_party():
    def bad_text(ctx):
        raise _NoArgs()

    def waits(ctx):
        return ctx.recv("bad_text", "x")

    with pytest.raises(_NoArgs) as info:
        run_local({"bad_text": bad_text, "waits": waits}, timeout=30, **FAST)
    assert "party 'bad_text'" in " ".join(getattr(info.value, "__notes__", []))

    def bad_result(ctx):
        return _TwoArgs(1, 2)

    def ok(ctx):
        return 1

    with pytest.raises(TypeError, match="party 'bad_result' cannot be returned"):
        run_local({"bad_result": bad_result, "ok": ok}, timeout=30, **FAST)


def test_what_a_party_started_ends_with_a_successful_run():
    def alice(ctx):
        return "done"

    def bob(ctx):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid

    out = run_local({"alice": alice, "bob": bob}, timeout=60, **FAST)
    assert _wait_dead([out["bob"]])
