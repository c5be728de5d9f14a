"""Faults: a party killed at any point of a job, a slow peer, a busy peer.

A party process is SIGKILLed at chosen points of PSI, SecureBoost / hetero-LR training
(two and three parties, the arbiter too), evaluation, prediction and in the middle of
writing an output file. Then every other party must stop within the job's timeouts with
``PeerLostError`` naming the dead party (in its own log, and as seen by the launcher), no
process of the run may be left, and every output file must be whole (the old version or
none; at most a temporary file of the killed process). At the CLI, as a user would run it:
``hefl run JOB.yaml`` with one party killed, and two ``hefl run JOB.yaml --party NAME``
processes with one killed. A peer whose messages are late (but within the receive
timeout) gives the same result as a prompt one; a peer busy computing for longer than the
heartbeat timeout is not declared lost.

What tests/federation and tests/jobs already cover is not repeated: a toy party killed
under ``run_local``, a party raising, the grandchild of a party that raised, one
``PartyContext.connect`` peer killed in-process, a failing party under ``hefl run``.

The kill points are injected in the test process before the party processes fork (they
inherit the wrappers): ``ZmqChannel.multicast`` / ``recv_many`` count the messages of the
victim whose tag starts with a prefix and SIGKILL the process at the N-th.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hefl import _atomic
from hefl.errors import PeerLostError, TimeoutError
from hefl.federation import run_local
from hefl.jobs import PartyFailed, load_job, run_job
from hefl.transport.zmq_channel import ZmqChannel

_JOBS = Path(__file__).resolve().parents[1] / "jobs"
if str(_JOBS) not in sys.path:
    sys.path.insert(0, str(_JOBS))
from jobhelpers import REPO, TEST_DATA, free_ports, small_job, write_yaml

HEFL = [sys.executable, "-m", "hefl"]
#: Short timeouts: a lost peer must be noticed long before the receive timeout.
TIMEOUTS = {"recv": 30, "connect": 20, "job": 120, "heartbeat": 3}
#: A killed run must end this long after it started: well before the receive timeout (a
#: normal run takes ~4 s here; the heartbeat is 3 s, the launcher's grace for the others 3 s).
END_WITHIN = 20.0


# ----------------------------------------------------------------------------- jobs


def _doc(tmp_path: Path, model: str = "secureboost", *, arbiter: bool = False,
         psi_jobs: int | None = None) -> dict:
    """The small breast job (mock HE) with a predict step and short timeouts."""
    doc = small_job(tmp_path / "out")
    doc["timeouts"] = dict(TIMEOUTS)
    if model == "hetero_lr":
        doc["steps"][1] = {"train": {"model": "hetero_lr", "params": {"max_iter": 3, "batch_size": 256}}}
    if arbiter:
        doc["parties"]["arbiter"] = {"role": "arbiter"}
    if psi_jobs:
        doc["steps"][0] = {"psi": {"n_jobs": psi_jobs}}
    doc["steps"].append({"predict": {"data": {
        "guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv"), "label_column": "y"},
        "host": {"path": str(TEST_DATA / "breast_hetero_host.csv")}}}})
    return doc


@pytest.fixture
def marker(monkeypatch):
    """A unique environment variable: every process the run execs carries it (/proc/PID/environ)."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("HEFL_FAULT_TEST", value)
    return value


@pytest.fixture
def fixed_permutations(monkeypatch):
    """The passive party's secret feature permutations from a fixed seed, so that two runs
    can be compared tree by tree (as in tests/jobs/test_jobs_resume.py)."""
    from hefl.models.secureboost import _federated

    orig = _federated.PassiveParty.__init__

    def init(self, *a, **kw):
        kw.setdefault("permutation_seed", 1234)
        orig(self, *a, **kw)

    monkeypatch.setattr(_federated.PassiveParty, "__init__", init)


# ----------------------------------------------------------------------------- fault injection


def _kill_at(monkeypatch, victim: str, where: str, prefix: str, nth: int,
             children: Path | None = None) -> None:
    """SIGKILL party ``victim`` at its ``nth`` message whose tag starts with ``prefix``:
    before sending it (``where="send"``) or right after receiving it (``"recv"``). The pids
    of its child processes at that moment go to ``children``."""
    orig_send, orig_recv = ZmqChannel.multicast, ZmqChannel.recv_many
    seen = {"n": 0}  # each forked party process counts in its own copy

    def hit(chan, tag):
        if chan.self_name == victim and tag.startswith(prefix):
            seen["n"] += 1
            if seen["n"] == nth:
                if children is not None:
                    me = os.getpid()
                    mine = [e for e in os.listdir("/proc") if e.isdigit() and (_stat(int(e)) or ("", 0))[1] == me]
                    children.write_text(" ".join(mine))
                os.kill(os.getpid(), signal.SIGKILL)

    def multicast(self, peers, tag, obj):
        if where == "send":
            hit(self, tag)
        return orig_send(self, peers, tag, obj)

    def recv_many(self, peers, tag, timeout=None):
        out = orig_recv(self, peers, tag, timeout)
        if where == "recv":
            hit(self, tag)
        return out

    monkeypatch.setattr(ZmqChannel, "multicast", multicast)
    monkeypatch.setattr(ZmqChannel, "recv_many", recv_many)


def _kill_while_writing(monkeypatch, victim: str, filename: str, nth: int) -> None:
    """SIGKILL party ``victim`` halfway through its ``nth`` write of ``filename``."""
    orig = _atomic.atomic_write_bytes
    seen = {"n": 0}

    def write(path, data):
        path = Path(path)
        if path.name == filename and path.parent.name == victim:
            seen["n"] += 1
            if seen["n"] == nth:
                with _atomic.atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        return orig(path, data)

    monkeypatch.setattr(_atomic, "atomic_write_bytes", write)


def _delay_sends(monkeypatch, party: str, low: float, high: float, record: Path, seed: int = 7) -> None:
    """Every message ``party`` sends leaves ``low``-``high`` s late (seeded); one line per
    delayed message goes to ``record``."""
    orig = ZmqChannel.multicast
    rng = random.Random(seed)

    def multicast(self, peers, tag, obj):
        if self.self_name == party:
            time.sleep(rng.uniform(low, high))
            with open(record, "a") as f:
                f.write(tag + "\n")
        return orig(self, peers, tag, obj)

    monkeypatch.setattr(ZmqChannel, "multicast", multicast)


# ----------------------------------------------------------------------------- checks


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, session) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def _living(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _run_processes(pids: set[int], marker: str | None = None,
                   session: int | None = None) -> dict[int, str]:
    """Living processes of a run: one of ``pids`` or in a process group led by one of them,
    one that carries ``marker`` in its environment, or one of ``session``."""
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        pid = int(e)
        st = _stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        hit = pid in pids or st[2] in pids or (session is not None and st[3] == session)
        if not hit and marker:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    hit = f"HEFL_FAULT_TEST={marker}".encode() in f.read().split(b"\0")
            except OSError:
                pass
        if hit:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
            except OSError:
                cmd = "?"
            out[pid] = f"{pid} ({st[0]}, group {st[2]}): {cmd}"
    return out


def _assert_nothing_left(pids: set[int], marker: str | None = None, session: int | None = None,
                         within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    left = _run_processes(pids, marker, session)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _run_processes(pids, marker, session)
    for pid in left:  # do not leave them to the next tests
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, "processes of the run outlived it:\n" + "\n".join(left.values())


def _party_pids(out: Path) -> dict[str, int]:
    """Party name -> pid, from the first line each party wrote to its log."""
    pids = {}
    for log in out.glob("*/party.log"):
        m = re.search(r"party (\w+), role \w+, pid (\d+)", log.read_text(errors="replace"))
        if m:
            pids[m.group(1)] = int(m.group(2))
    return pids


_TMP = re.compile(r"^\.(.+)\.tmp-(\d+)$")


def _assert_outputs_whole(out: Path, killed: set[int]) -> list[Path]:
    """Every file under ``out`` is complete; leftover temporary files only from ``killed``
    processes. Returns the leftovers."""
    import matplotlib.image

    leftovers = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        m = _TMP.match(path.name)
        if m:
            assert int(m.group(2)) in killed, f"{path}: temporary file of a process that was not killed"
            leftovers.append(path)
            continue
        what = path.suffix
        try:
            if what == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif what == ".jsonl":
                for line in path.read_text(encoding="utf-8").splitlines():
                    json.loads(line)
            elif what == ".csv":
                assert len(pd.read_csv(path).columns) > 1
            elif what == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert matplotlib.image.imread(path).size > 0
            elif what == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for k in z.files:
                        z[k]
            elif what == ".log":
                pass  # an append-only log: a killed party's last line may be cut
            else:
                raise AssertionError(f"{path}: no check for {what!r} files; add one")
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"{path} is not a whole {what} file: {exc!r}") from exc
    return leftovers


def _assert_killed_run(info, job, victim: str, elapsed: float) -> dict[str, int]:
    """What a run with ``victim`` SIGKILLed must look like; returns the parties' pids."""
    err = info.value
    parties = list(job.parties)
    assert elapsed < END_WITHIN, f"the run took {elapsed:.1f} s to end after a party was killed"
    assert err.party == victim, str(err)
    assert isinstance(err.error, PeerLostError) and err.error.peer == victim, str(err)
    assert "SIGKILL" in str(err.error)
    survivors = [p for p in parties if p != victim]
    assert set(err.others) == set(survivors), err.others
    for s in survivors:
        # each survivor stopped on its own (not killed by the launcher) because of the victim
        text = err.others[s]
        assert text.startswith("PeerLostError") and f"'{victim}'" in text, (s, err.others)
        log = (job.output / s / "party.log").read_text()
        assert "PeerLostError" in log and f"peer '{victim}'" in log, f"{s}'s log:\n{log[-3000:]}"
    return _party_pids(job.output)


def _killed_job(tmp_path, monkeypatch, marker, doc, *, fault) -> tuple:
    job = load_job(write_yaml(tmp_path / "job.yaml", doc))
    fault()
    t = time.monotonic()
    with pytest.raises(PartyFailed) as info:
        run_job(job, progress=False)
    elapsed = time.monotonic() - t
    monkeypatch.undo()  # no more wrappers (and the marker is gone from os.environ)
    return job, info, elapsed


# ----------------------------------------------------------------------------- kill points

KILL_POINTS = [
    # model, arbiter, victim, where, tag prefix, n-th
    pytest.param("secureboost", False, "host", "send", "psi/", 3, id="psi-passive"),
    pytest.param("secureboost", False, "guest", "recv", "psi/", 2, id="psi-active"),
    pytest.param("secureboost", False, "host", "recv", "train/cmd-", 12, id="secureboost-passive-tree2"),
    pytest.param("secureboost", False, "guest", "send", "train/", 25, id="secureboost-active"),
    pytest.param("secureboost", False, "host", "send", "evaluate-", 1, id="evaluate-passive"),
    pytest.param("secureboost", False, "guest", "send", "psi-predict/", 3, id="predict-psi-active"),
    pytest.param("secureboost", False, "host", "recv", "predict/", 1, id="predict-passive"),
    pytest.param("hetero_lr", True, "arbiter", "send", "train/", 5, id="hetero_lr-arbiter"),
    pytest.param("hetero_lr", True, "host", "recv", "train/", 10, id="hetero_lr-passive"),
    pytest.param("hetero_lr", True, "guest", "send", "train/", 8, id="hetero_lr-active"),
]


@pytest.mark.parametrize("model, arbiter, victim, where, prefix, nth", KILL_POINTS)
def test_killed_party_stops_every_other_party(tmp_path, monkeypatch, marker, model, arbiter, victim,
                                              where, prefix, nth):
    doc = _doc(tmp_path, model, arbiter=arbiter)
    job, info, elapsed = _killed_job(tmp_path, monkeypatch, marker, doc,
                                     fault=lambda: _kill_at(monkeypatch, victim, where, prefix, nth))
    pids = _assert_killed_run(info, job, victim, elapsed)
    assert set(pids) == set(job.parties)
    _assert_nothing_left(set(pids.values()), marker)
    _assert_outputs_whole(job.output, {pids[victim]})


def test_party_killed_while_writing_keeps_the_old_file(tmp_path, monkeypatch, marker):
    """The active party dies halfway through rewriting metrics.json (after evaluation):
    the file still holds the version written after training; only the killed process's
    temporary file is left."""
    doc = _doc(tmp_path)
    job, info, elapsed = _killed_job(
        tmp_path, monkeypatch, marker, doc,
        fault=lambda: _kill_while_writing(monkeypatch, "guest", "metrics.json", 2))
    pids = _assert_killed_run(info, job, "guest", elapsed)
    _assert_nothing_left(set(pids.values()), marker)
    left = _assert_outputs_whole(job.output, {pids["guest"]})
    assert [p.name for p in left] == [f".metrics.json.tmp-{pids['guest']}"]
    metrics = json.loads((job.output / "guest" / "metrics.json").read_text())
    assert metrics["training_curve"] and not metrics["evaluation"]  # the first version
    json.loads((job.output / "guest" / "model.json").read_text())


@pytest.mark.slow
def test_killed_party_leaves_no_psi_worker(tmp_path, monkeypatch, marker):
    """PSI with worker processes (n_jobs=2): the killed party's workers, which are no longer
    anybody's children once it is dead, do not outlive the run."""
    doc = _doc(tmp_path, psi_jobs=2)
    children = tmp_path / "children.txt"
    job, info, elapsed = _killed_job(
        tmp_path, monkeypatch, marker, doc,
        fault=lambda: _kill_at(monkeypatch, "host", "recv", "psi/r", 1, children))
    pids = _assert_killed_run(info, job, "host", elapsed)
    workers = {int(p) for p in children.read_text().split()}
    assert len(workers) >= 2  # the workers (and a resource tracker) were there when it died
    _assert_nothing_left(set(pids.values()) | workers, marker)
    _assert_outputs_whole(job.output, {pids["host"]})


# ----------------------------------------------------------------------------- the CLI


def _wait_for(pred, within: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: "
                                 f"{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


def _training_under_way(out: Path, party: str, trees: int):
    """Party ``party``'s pid once its log says it has finished ``trees`` trees."""
    log = out / party / "party.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    done = [int(x) for x in re.findall(r"step train: (\d+)/", text)]
    return _party_pids(out).get(party) if done and max(done) >= trees else None


def _spawn(args: list[str], out_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([*HEFL, *args, "--output", str(out_dir), "-q"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _reap(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


@pytest.mark.slow
def test_cli_run_with_a_killed_party(tmp_path):
    """``hefl run JOB.yaml`` as a user starts it; the passive party's process is killed in
    the middle of training: the launcher exits 1 within the timeouts naming it, the active
    party's log says it lost the host, and nothing of the run's session is left."""
    doc = _doc(tmp_path)
    doc["steps"][1]["train"]["params"] = {"n_estimators": 60, "max_depth": 3}
    path = write_yaml(tmp_path / "job.yaml", doc)
    out = tmp_path / "cli"
    launcher = _spawn(["run", str(path)], out)
    try:
        host = _wait_for(lambda: _training_under_way(out, "guest", 2) and _party_pids(out).get("host"),
                         60, "training under way", launcher)
        st = _stat(host)
        assert st is not None and st[1] == launcher.pid, "the host's pid is not a child of the launcher"
        os.kill(host, signal.SIGKILL)
        t = time.monotonic()
        _, err = launcher.communicate(timeout=END_WITHIN)
        took = time.monotonic() - t
    finally:
        _reap(launcher)
    assert launcher.returncode == 1, err[-3000:]
    assert took < END_WITHIN
    assert "hefl run: party 'host' failed: PeerLostError" in err and "SIGKILL" in err, err[-3000:]
    guest_log = (out / "guest" / "party.log").read_text()
    assert "PeerLostError" in guest_log and "peer 'host'" in guest_log
    assert "step train: done" not in guest_log  # it was really killed mid-training
    _assert_nothing_left({launcher.pid}, session=launcher.pid)
    _assert_outputs_whole(out, {host})


def test_cli_launcher_terminated_stops_every_party(tmp_path):
    """SIGTERM to the launcher alone (a supervisor stopping it): it stops every party (each
    runs in a process group of its own) before it exits, and nothing of the run is left."""
    doc = _doc(tmp_path)
    doc["steps"][1]["train"]["params"] = {"n_estimators": 60, "max_depth": 3}
    out = tmp_path / "cli"
    launcher = _spawn(["run", str(write_yaml(tmp_path / "job.yaml", doc))], out)
    try:
        _wait_for(lambda: _training_under_way(out, "guest", 2), 60, "training under way", launcher)
        parties = set(_party_pids(out).values())
        assert len(parties) == 2
        os.kill(launcher.pid, signal.SIGTERM)
        launcher.communicate(timeout=END_WITHIN)
    finally:
        _reap(launcher)
    assert launcher.returncode == 128 + signal.SIGTERM
    _assert_nothing_left(parties | {launcher.pid}, session=launcher.pid)


@pytest.mark.slow
def test_party_mode_survivor_exits_with_peer_lost(tmp_path):
    """Multi-host style: ``hefl run JOB.yaml --party guest`` and ``--party host`` in two
    processes (plaintext loopback); the host is killed mid-training: the guest notices by
    the heartbeat (3 s), exits 1 naming the host, and leaves nothing behind."""
    doc = _doc(tmp_path)
    doc["steps"][1]["train"]["params"] = {"n_estimators": 60, "max_depth": 3}
    for name, port in zip(("guest", "host"), free_ports(2)):
        doc["parties"][name]["address"] = f"tcp://127.0.0.1:{port}"
    path = str(write_yaml(tmp_path / "two-hosts.yaml", doc))
    out = tmp_path / "party"
    host = _spawn(["run", path, "--party", "host"], out)
    guest = _spawn(["run", path, "--party", "guest"], out)
    try:
        _wait_for(lambda: _training_under_way(out, "guest", 2), 60, "training under way", guest)
        os.kill(host.pid, signal.SIGKILL)
        t = time.monotonic()
        _, err = guest.communicate(timeout=TIMEOUTS["heartbeat"] + 10)
        took = time.monotonic() - t
    finally:
        _reap(host, guest)
    assert guest.returncode == 1, err[-3000:]
    assert took < TIMEOUTS["heartbeat"] + 6, f"the guest took {took:.1f} s to give up"
    assert "party 'guest' failed in step 'train': PeerLostError" in err, err[-3000:]
    assert "peer 'host'" in err
    assert "no heartbeat" in err
    log = (out / "guest" / "party.log").read_text()
    assert "PeerLostError" in log and "peer 'host'" in log
    _assert_nothing_left({host.pid, guest.pid})  # each was a session and group leader
    _assert_outputs_whole(out, {host.pid})


# ----------------------------------------------------------------------------- slow and busy peers


def _strip(model: dict) -> dict:
    model = dict(model)
    model.pop("timings", None)
    return model


@pytest.mark.slow
def test_slow_peer_gives_the_same_model(tmp_path, monkeypatch, fixed_permutations):
    """Every message of the host leaves 50-200 ms late (well within the 20 s receive timeout
    and the 3 s heartbeat): the run succeeds with the models and predictions of a prompt run."""
    doc = _doc(tmp_path)
    doc["steps"] = [s for s in doc["steps"] if "evaluate" not in s]  # fewer messages, same coverage
    doc["output"] = str(tmp_path / "prompt")
    run_job(load_job(write_yaml(tmp_path / "prompt.yaml", doc)), progress=False)
    doc["output"] = str(tmp_path / "slow")
    record = tmp_path / "delayed.txt"
    _delay_sends(monkeypatch, "host", 0.05, 0.2, record)
    run_job(load_job(write_yaml(tmp_path / "slow.yaml", doc)), progress=False)
    tags = record.read_text().split()
    assert len(tags) >= 20 and {t.split("/")[0] for t in tags} >= {"psi", "train", "predict"}
    for party in ("guest", "host"):
        a = json.loads((tmp_path / "prompt" / party / "model.json").read_text())
        b = json.loads((tmp_path / "slow" / party / "model.json").read_text())
        assert _strip(a) == _strip(b), f"{party}'s model differs with a slow host"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "prompt" / "guest" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "slow" / "guest" / "predictions.csv"))


def _psi_party(ids):
    def fn(ctx):
        from hefl.psi import intersect

        return intersect(ctx, ids, batch_size=64)  # several messages per direction
    return fn


def test_slow_peer_psi_and_the_limit(tmp_path, monkeypatch):
    """PSI with one party's messages 50-200 ms late: the same intersection as a prompt run.
    Late beyond the receive timeout, the run fails with TimeoutError naming the late party."""
    rng = np.random.default_rng(5)
    a_ids = [f"u{i}" for i in rng.permutation(400)[:250]]
    b_ids = [f"u{i}" for i in rng.permutation(400)[:250]]
    fns = {"alice": _psi_party(a_ids), "bob": _psi_party(b_ids)}
    fast = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0}
    prompt = run_local(fns, timeout=60, recv_timeout=5, **fast)
    common = set(a_ids) & set(b_ids)
    assert {a_ids[i] for i in prompt["alice"]} == common
    with monkeypatch.context() as m:
        _delay_sends(m, "alice", 0.05, 0.2, tmp_path / "delayed.txt")
        slow = run_local(fns, timeout=60, recv_timeout=5, **fast)
    assert len((tmp_path / "delayed.txt").read_text().split()) >= 5
    assert {a_ids[i] for i in slow["alice"]} == common
    assert [a_ids[i] for i in slow["alice"]] == [b_ids[i] for i in slow["bob"]]  # one order on both

    with monkeypatch.context() as m:
        _delay_sends(m, "alice", 2.5, 2.5, tmp_path / "late.txt")
        with pytest.raises(TimeoutError) as info:
            run_local(fns, timeout=60, recv_timeout=1.0, **fast)
    assert info.value.peer == "alice", str(info.value)


def _busy(how):
    def fn(ctx):
        ctx.send("waiter", "ready", 1)
        t = time.monotonic()
        x = 0
        if how == "python":
            while time.monotonic() - t < 3.5:  # pure Python: holds the GIL between switches
                x += 1
        else:
            time.sleep(3.5)  # blocked in a call that releases the GIL (like the HE kernels)
        ctx.send("waiter", "result", x)
        return time.monotonic() - t
    return fn


def _waiter(ctx):
    ctx.recv("busy", "ready")
    t = time.monotonic()
    ctx.recv("busy", "result", timeout=30)
    return time.monotonic() - t


@pytest.mark.parametrize("how", ["python", "native"])
def test_busy_peer_is_not_declared_lost(how):
    """A party computing for 3.5 s without sending anything, with a 1 s heartbeat timeout:
    its heartbeats come from the transport's I/O thread, so the waiting peer keeps waiting
    and the run succeeds."""
    out = run_local({"busy": _busy(how), "waiter": _waiter}, timeout=60, recv_timeout=30,
                    heartbeat_interval=0.1, heartbeat_timeout=1.0)
    assert out["busy"] >= 3.5 and out["waiter"] >= 3.0  # silent for 3 x the heartbeat timeout
