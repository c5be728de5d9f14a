"""Hetero-LR checkpoints: a run killed in any epoch resumes to the model of an uninterrupted run.

Paillier (and mock) runs are exact, so a resumed run must match bit for bit. CKKS is
approximate *and* randomised (encryption noise, masks, noise flooding): two uninterrupted
CKKS runs already differ in the last digits, so there the restored part must equal the
checkpoint exactly and the rest must agree within CKKS's precision.
"""

from __future__ import annotations

import numpy as np
import pytest

import hefl.checkpoint
from hefl.checkpoint import Checkpointer
from hefl.errors import DataError, ProtocolError
from hefl.federation import run_threads
from hefl.models.hetero_lr import ActiveParty, Arbiter, LRConfig, PassiveParty
from hefl.models.hetero_lr._core import make_optimizer

from .conftest import load_dataset


class Crash(Exception):
    pass


# Where a run is killed matters for which checkpoints exist: each party saves right after
# the epoch's stop flag, so a kill point is chosen after a message the other parties send
# only once they have saved (e.g. the passive's "g" follows the active's "sh" / "d").


class _Ctx:
    """A party's context that records the tags it sends and raises (like a killed process)
    just before it would send the message with full tag ``die_at``."""

    def __init__(self, ctx, die_at: str | None = None, sent: list | None = None):
        self._ctx, self._die_at = ctx, die_at
        self.sent = [] if sent is None else sent

    def sub(self, name):
        return _Ctx(self._ctx.sub(name), self._die_at, self.sent)

    def _check(self, tag):
        full = self._ctx.tag(tag)
        if full == self._die_at:
            raise Crash(f"killed before sending {full}")
        self.sent.append(full)

    def send(self, peer, tag, obj):
        self._check(tag)
        self._ctx.send(peer, tag, obj)

    def broadcast(self, tag, obj, peers=None):
        self._check(tag)
        self._ctx.broadcast(tag, obj, peers)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


@pytest.fixture(scope="module")
def data():
    Xtr, _, ytr, _, ng = load_dataset("breast")
    X, y = Xtr[:96], ytr[:96].astype(float)
    # three one-vs-rest problems from a score on both parties' columns
    score = X[:, 0] - X[:, ng]
    y3 = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    Y3 = (y3[:, None] == np.arange(3)[None, :]).astype(float)
    return X[:, :ng], X[:, ng:], y, Y3


def _cfg(protocol: str, he: str, **kw) -> LRConfig:
    base = {"he": he, "protocol": protocol, "key_size": 512, "allow_insecure": True, "max_iter": 4,
            "batch_size": 32, "tol": None, "alpha": 1e-3, "arbiter": "arbiter" if protocol == "arbiter" else None}
    return LRConfig(**{**base, **kw}).validate()


def _run(tmp, data, cfg, y=None, *, resume=False, die=None, checkpoints=True, host_X=None, sent=None):
    """One federated run in threads; ``die=(party, full tag)`` kills that party before that message."""
    Xa, Xp, yb, _ = data
    y = yb if y is None else y
    ck = (lambda name: Checkpointer(tmp / name)) if checkpoints else (lambda name: None)

    def ctx_of(name, ctx):
        return _Ctx(ctx, die[1] if die and die[0] == name else None, ({} if sent is None else sent).setdefault(name, []))

    roles = {
        "guest": lambda ctx: ActiveParty(Xa, y, cfg, seed=7, checkpoint=ck("guest"), resume=resume)
        .run(ctx_of("guest", ctx)),
        "host": lambda ctx: PassiveParty(Xp if host_X is None else host_X, cfg, checkpoint=ck("host"))
        .run(ctx_of("host", ctx)),
    }
    if cfg.arbiter:
        roles["arbiter"] = lambda ctx: Arbiter(cfg, checkpoint=ck("arbiter")).run(ctx_of("arbiter", ctx))
    return run_threads(roles, timeout=300, recv_timeout=60)


_REFS: dict = {}


def _ref(data, cfg, y=None, key=""):
    """The uninterrupted run (no checkpointers), once per configuration."""
    k = (cfg, key)
    if k not in _REFS:
        _REFS[k] = _run(None, data, cfg, y, checkpoints=False)
    return _REFS[k]


def _curve(out, cfg):
    """The loss curves: the active party's (two-party) or the arbiter's."""
    return out["arbiter"]["loss_curve"] if cfg.arbiter else out["guest"]["loss_curve"]


def _assert_same(got, ref, cfg):
    if cfg.he == "ckks":
        for c in range(len(ref["guest"]["coef"])):
            np.testing.assert_allclose(got["guest"]["coef"][c], ref["guest"]["coef"][c], atol=2e-3)
            np.testing.assert_allclose(got["host"]["coef"][c], ref["host"]["coef"][c], atol=2e-3)
        np.testing.assert_allclose(got["guest"]["intercept"], ref["guest"]["intercept"], atol=2e-3)
        for a, b in zip(_curve(got, cfg), _curve(ref, cfg)):
            np.testing.assert_allclose(a, b, rtol=1e-3)
        assert got["guest"]["n_iter"] == ref["guest"]["n_iter"]
        return
    for c in range(len(ref["guest"]["coef"])):
        np.testing.assert_array_equal(got["guest"]["coef"][c], ref["guest"]["coef"][c])
        np.testing.assert_array_equal(got["host"]["coef"][c], ref["host"]["coef"][c])
    assert got["guest"]["intercept"] == ref["guest"]["intercept"]
    assert got["guest"]["n_iter"] == ref["guest"]["n_iter"]
    assert got["guest"]["loss_curve"] == ref["guest"]["loss_curve"]
    if cfg.arbiter:
        assert got["arbiter"]["loss_curve"] == ref["arbiter"]["loss_curve"]
        assert got["arbiter"]["n_iter"] == ref["arbiter"]["n_iter"]


def _assert_restored(got, saved, cfg, step):
    """What a resumed run took over from its checkpoint is that checkpoint, bit for bit."""
    meta, _ = saved
    c, e = meta["problem"], meta["epoch"]
    curve = _curve(got, cfg)
    if cfg.arbiter is None:
        assert curve[c][:e] == meta["losses"]
    assert got["guest"]["epoch_seconds"][c][:e] == meta["times"]
    for k, done in enumerate(meta["finished"]):
        assert got["guest"]["loss_curve"][k] == done["loss_curve"]
        assert got["guest"]["intercept"][k] == done["intercept"]
    assert sum(got["guest"]["n_iter"][:c]) + e == step


SCHEMES = [
    pytest.param("two_party", "mock", id="two_party-mock"),
    pytest.param("arbiter", "mock", id="arbiter-mock"),
    pytest.param("two_party", "paillier", id="two_party-paillier"),
    pytest.param("arbiter", "paillier", id="arbiter-paillier"),
    pytest.param("two_party", "ckks", id="two_party-ckks"),
    pytest.param("arbiter", "ckks", id="arbiter-ckks"),
]


@pytest.mark.parametrize("protocol, he", SCHEMES)
def test_crash_mid_epoch_resumes_to_the_same_model(tmp_path, data, protocol, he, caplog):
    cfg = _cfg(protocol, he)
    ref = _ref(data, cfg)
    with pytest.raises(Crash):  # the passive party dies in the middle of epoch 2 (two epochs done)
        _run(tmp_path, data, cfg, die=("host", "p0/e2/b1/u"))
    saved = Checkpointer(tmp_path / "guest").load(2)
    caplog.set_level("INFO", logger="hefl")
    got = _run(tmp_path, data, cfg, resume=True)
    assert "continuing run" in caplog.text and "after epoch 2 (the newest every party has)" in caplog.text
    _assert_restored(got, saved, cfg, 2)
    _assert_same(got, ref, cfg)


@pytest.mark.parametrize("protocol, he", SCHEMES[2:])
def test_crash_in_the_second_problem_of_a_multiclass_run(tmp_path, data, protocol, he, caplog):
    cfg = _cfg(protocol, he, max_iter=2)
    Y3 = data[3]
    ref = _ref(data, cfg, Y3, "multiclass")
    leader = "arbiter" if cfg.arbiter else "guest"  # who announces the epoch's stop flag
    with pytest.raises(Crash):  # problem 0 finished, problem 1 killed before the end of its epoch 1
        _run(tmp_path, data, cfg, Y3, die=(leader, "p1/e1/stop"))
    saved = Checkpointer(tmp_path / "guest").load(3)
    caplog.set_level("INFO", logger="hefl")
    got = _run(tmp_path, data, cfg, Y3, resume=True)
    assert "after epoch 3 (the newest every party has): problem 2 of 3, 1 epoch(s) done" in caplog.text
    _assert_restored(got, saved, cfg, 3)
    assert len(got["guest"]["coef"]) == len(got["host"]["coef"]) == 3
    _assert_same(got, ref, cfg)


@pytest.mark.parametrize("protocol, he", SCHEMES[2:4])
def test_a_party_missing_its_newest_checkpoint(tmp_path, data, protocol, he, caplog):
    cfg = _cfg(protocol, he)
    ref = _ref(data, cfg)
    with pytest.raises(Crash):
        _run(tmp_path, data, cfg, die=("guest", "p0/e3/b0/" + ("q" if protocol == "two_party" else "g")))
    lacking = "arbiter" if cfg.arbiter else "host"
    assert Checkpointer(tmp_path / lacking).steps() == [1, 2, 3]
    (tmp_path / lacking / "ckpt-000003.npz").unlink()  # e.g. killed while saving it
    caplog.set_level("INFO", logger="hefl")
    got = _run(tmp_path, data, cfg, resume=True)
    assert "after epoch 2 (the newest every party has)" in caplog.text
    _assert_same(got, ref, cfg)


@pytest.mark.parametrize("protocol, he", SCHEMES[2:4])
def test_a_converged_run_is_not_trained_further(tmp_path, data, protocol, he):
    # tol stops problem 0 early; the run is killed in problem 1, and once more after it ended
    cfg = _cfg(protocol, he, max_iter=6, tol=0.03, batch_size=48)
    Y = data[3][:, :2]
    ref = _ref(data, cfg, Y, "converged")
    n0 = ref["guest"]["n_iter"][0]
    assert n0 < cfg.max_iter, "problem 0 should stop early (tol)"
    with pytest.raises(Crash):
        _run(tmp_path, data, cfg, Y, die=("host", "p1/e0/b0/g"))
    sent: dict = {}
    got = _run(tmp_path, data, cfg, Y, resume=True, sent=sent)
    _assert_same(got, ref, cfg)
    assert not any(t.startswith("p0/") for t in sent["host"])  # problem 0 had stopped: no more epochs
    sent = {}
    again = _run(tmp_path, data, cfg, Y, resume=True, sent=sent)  # a finished run resumes to its end
    _assert_same(again, ref, cfg)
    assert again["guest"]["epoch_seconds"] == got["guest"]["epoch_seconds"]
    assert not any("/e" in t for ts in sent.values() for t in ts)  # no epoch trained at all


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
def test_changed_data_starts_afresh(tmp_path, data, protocol, caplog):
    cfg = _cfg(protocol, "mock")
    with pytest.raises(Crash):
        _run(tmp_path, data, cfg, die=("host", "p0/e2/b0/g"))
    old_run = Checkpointer(tmp_path / "guest").load(2)[0]["run_id"]
    caplog.set_level("INFO", logger="hefl")
    X2 = data[1].copy()
    X2[0, 0] += 1.0  # the passive party's data changed
    got = _run(tmp_path, data, cfg, host_X=X2, resume=True)
    assert "training from the first epoch" in caplog.text and "other data or parameters" in caplog.text
    assert got["guest"]["n_iter"] == [cfg.max_iter]
    ck = Checkpointer(tmp_path / "host")
    assert ck.steps() == [2, 3, 4] and ck.load(4)[0]["run_id"] != old_run


def test_changed_parameters_start_afresh_but_max_iter_does_not(tmp_path, data, caplog):
    cfg = _cfg("two_party", "mock")
    with pytest.raises(Crash):
        _run(tmp_path, data, cfg, die=("host", "p0/e3/b0/g"))
    caplog.set_level("INFO", logger="hefl")
    longer = _cfg("two_party", "mock", max_iter=5)
    got = _run(tmp_path, data, longer, resume=True)  # max_iter is no input of the epochs done so far
    assert "after epoch 3" in caplog.text
    _assert_same(got, _ref(data, longer), longer)
    caplog.clear()
    got = _run(tmp_path, data, _cfg("two_party", "mock", max_iter=5, alpha=1e-2), resume=True)
    assert "training from the first epoch" in caplog.text


def test_passive_refuses_a_checkpoint_it_does_not_hold(tmp_path, data, monkeypatch):
    cfg = _cfg("two_party", "mock")
    _run(tmp_path, data, cfg)
    Checkpointer(tmp_path / "host").clear()
    # an active party that claims every party holds its own newest checkpoint
    monkeypatch.setattr(hefl.checkpoint, "pick_common", lambda own, others: max(own, key=lambda rs: rs[1]))
    with pytest.raises(ProtocolError, match="no checkpoint of"):
        _run(tmp_path, data, cfg, resume=True)


def test_checkpoints_are_plain_data_and_only_the_newest_are_kept(tmp_path, data):
    cfg = _cfg("arbiter", "mock", max_iter=3)
    _run(tmp_path, data, cfg, data[3])
    for party in ("guest", "host", "arbiter"):
        ck = Checkpointer(tmp_path / party)
        assert ck.steps() == [7, 8, 9]
        with np.load(ck.directory / "ckpt-000009.npz", allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
    meta, arrays = Checkpointer(tmp_path / "guest").load(9)
    assert set(arrays) == {"w", "opt_m", "opt_v", "coef_0", "coef_1"}
    assert (meta["problem"], meta["epoch"], len(meta["finished"])) == (2, 3, 2)
    assert set(Checkpointer(tmp_path / "host").load(9)[1]) == {"w", "opt_m", "opt_v", "coef_0", "coef_1"}
    assert len(Checkpointer(tmp_path / "arbiter").load(9)[0]["curves"]) == 2


@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adagrad", "adam"])
def test_optimizer_state_round_trip(kind):
    cfg = LRConfig(optimizer=kind, decay=0.1, penalty="l1", alpha=1e-2)
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 4))
    a = make_optimizer(cfg, 3, True)
    w = np.zeros(4)
    for g in grads[:3]:
        w = a.step(w, g)
    meta, arrays = a.get_state()
    b = make_optimizer(cfg, 3, True)
    b.set_state(meta, {k: v.copy() for k, v in arrays.items()})
    wa, wb = w.copy(), w.copy()
    for g in grads[3:]:
        wa, wb = a.step(wa, g), b.step(wb, g)
    np.testing.assert_array_equal(wa, wb)
    with pytest.raises(DataError):
        make_optimizer(cfg, 2, True).set_state(meta, arrays)
