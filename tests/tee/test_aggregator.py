"""The TEE aggregator hosting the hetero-LR arbiter: same weights as the plain arbiter,
policy refusals reach the parties and are logged, attestation failures stop a party
before it sends anything, and the masked-sum aggregation adds up."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hefl.errors import PolicyError
from hefl.federation import run_local, run_threads
from hefl.models.hetero_lr import ActiveParty, Arbiter, LRConfig, PassiveParty
from hefl.tee import (
    OPERATIONS,
    AttestationError,
    Policy,
    SimulatedProvider,
    TeeAggregator,
    TeeClient,
    classify,
    measure,
    secure_sum_client,
    verify_log,
)

ALL = Policy.of(OPERATIONS)
MEAS = measure({"service": "test-lr"})


@pytest.fixture(autouse=True)
def _quiet():
    names = ["hefl.he.mock", "hefl.tee.attestation", "hefl.tee.aggregator"]
    old = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    yield
    for n, lv in zip(names, old):
        logging.getLogger(n).setLevel(lv)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = (X @ np.array([1.0, -2.0, 0.5, 1.5, -1.0, 0.3]) + 0.2 * rng.normal(size=200) > 0).astype(float)
    return X[:, :3], X[:, 3:], y[:, None]


def _cfg(he="mock", max_iter=3):
    return LRConfig(he=he, key_size=1024, allow_insecure=True, protocol="arbiter", arbiter="arbiter",
                    max_iter=max_iter, batch_size=64, tol=None, n_jobs=1, backend="cpu").validate()


def _roles(cfg, data, tee=None, *, policies=None, provider=None, root=None, allowed=(MEAS,)):
    Xg, Xh, y = data
    roles = {"guest": ActiveParty(Xg, y, cfg, seed=5).run, "host": PassiveParty(Xh, cfg).run}
    if tee is None:
        roles["arbiter"] = Arbiter(cfg).run
        return roles
    provider = provider or SimulatedProvider()
    policies = policies or {}

    def agg(ctx):
        a = TeeAggregator(provider, MEAS, ["guest", "host"], tee)
        g = a.attach(ctx)
        out = Arbiter(cfg).run(g)
        a.finish()
        return out

    def client(fn):
        def run(ctx):
            c = TeeClient("arbiter", policies.get(ctx.self_name, ALL),
                          root=root if root is not None else provider.root(), allowed=list(allowed))
            out = fn(c.attach(ctx))
            c.finish()
            out["heads"] = c.heads
            return out
        return run

    return {"guest": client(roles["guest"]), "host": client(roles["host"]), "arbiter": agg}


def test_lr_through_the_tee_matches_the_plain_arbiter(tmp_path, data):
    cfg = _cfg()
    plain = run_threads(_roles(cfg, data), timeout=60)
    log = tmp_path / "audit.jsonl"
    tee = run_threads(_roles(cfg, data, log), timeout=60)
    np.testing.assert_allclose(tee["guest"]["coef"][0], plain["guest"]["coef"][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tee["guest"]["intercept"], plain["guest"]["intercept"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tee["host"]["coef"][0], plain["host"]["coef"][0], rtol=0, atol=1e-12)
    assert tee["arbiter"]["loss_curve"][0] == pytest.approx(plain["arbiter"]["loss_curve"][0])
    res = verify_log(log, heads=tee["guest"]["heads"] + tee["host"]["heads"])
    assert res.ok, res.error
    ops = [e["op"] for e in res.entries]
    for op in ("audit.open", "tee.attest", "tee.policy", "lr.setup", "lr.encrypt_zero",
               "lr.open_gradient", "lr.loss", "audit.close"):
        assert op in ops
    # one head per epoch plus the final one
    assert len(tee["guest"]["heads"]) == cfg.max_iter + 1
    assert tee["guest"]["heads"][-1] == res.head


@pytest.mark.slow
def test_lr_paillier_1024_over_processes_with_curve(tmp_path, data):
    """Real keys, real CurveZMQ links: the quote binds the key the parties' links pin."""
    cfg = _cfg("paillier", max_iter=2)
    plain = run_local(_roles(cfg, data), timeout=120)
    log = tmp_path / "audit.jsonl"
    tee = run_local(_roles(cfg, data, log), timeout=120, curve_keys=True)
    np.testing.assert_allclose(tee["guest"]["coef"][0], plain["guest"]["coef"][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tee["host"]["coef"][0], plain["host"]["coef"][0], rtol=0, atol=1e-9)
    res = verify_log(log, heads=tee["host"]["heads"])
    assert res.ok, res.error
    assert res.entries[0]["outputs"]["channel_key"]  # a real CURVE key was bound


def test_round_limit_is_refused_reported_to_the_party_and_logged(tmp_path, data):
    log = tmp_path / "audit.jsonl"
    pols = {"guest": Policy.of(OPERATIONS, max_rounds=1)}
    with pytest.raises(PolicyError) as ei:
        run_threads(_roles(_cfg(max_iter=3), data, log, policies=pols), timeout=60)
    msg = str(ei.value)
    assert "guest" in msg and "exceed its limit of 1 round" in msg
    notes = " ".join(getattr(ei.value, "__notes__", []))
    assert "party 'guest'" in notes or "party 'host'" in notes  # raised in a data party
    res = verify_log(log)
    assert res.ok, res.error  # the log stays verifiable and closed
    refused = [e for e in res.entries if e["outcome"] == "refused"]
    assert refused and refused[0]["who"] == "guest" and refused[0]["op"] == "lr.encrypt_zero"
    assert res.entries[-1]["op"] == "audit.close" and res.entries[-1]["outcome"] == "refused"


def test_operation_not_allowed_is_refused(tmp_path, data):
    log = tmp_path / "audit.jsonl"
    pols = {"host": Policy.of(["lr.setup", "lr.encrypt_zero", "lr.open_gradient"])}  # no lr.loss
    with pytest.raises(PolicyError, match="'lr.loss'.*'host'"):
        run_threads(_roles(_cfg(), data, log, policies=pols), timeout=60)
    res = verify_log(log)
    assert res.ok and any(e["outcome"] == "refused" and e["op"] == "lr.loss" for e in res.entries)


def test_untrusted_root_stops_the_party_before_it_sends_data(tmp_path, data):
    with pytest.raises(AttestationError, match="signature"):
        run_threads(_roles(_cfg(), data, tmp_path / "a.jsonl", root=SimulatedProvider().root()), timeout=60)
    res = verify_log(tmp_path / "a.jsonl", require_close=False)
    assert not [e for e in res.entries if e["op"].startswith("lr.")]  # no data reached it


def test_unlisted_measurement_stops_the_party(tmp_path, data):
    with pytest.raises(AttestationError, match="allow-list"):
        run_threads(_roles(_cfg(), data, tmp_path / "a.jsonl", allowed=[measure({"x": 1})]), timeout=60)


def test_client_checks_the_bound_key_against_its_channel(tmp_path):
    prov = SimulatedProvider()

    def agg(ctx):
        TeeAggregator(prov, MEAS, ["guest"], tmp_path / "a.jsonl").attach(ctx)

    def guest(ctx):
        TeeClient("arbiter", ALL, root=prov.root(), allowed=[MEAS],
                  channel_key="Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID").attach(ctx)

    with pytest.raises(AttestationError, match="channel key"):
        run_threads({"arbiter": agg, "guest": guest}, timeout=30)


def test_secure_sum(tmp_path):
    prov = SimulatedProvider()
    vecs = {"a": np.array([1.5, -2.0, 3.25]), "b": np.array([0.5, 4.0, -1.0]), "c": np.array([-1.0, 0.0, 2.0])}

    def agg(ctx):
        a = TeeAggregator(prov, MEAS, list(vecs), tmp_path / "s.jsonl")
        g = a.attach(ctx)
        a.secure_sum(g, "r0")
        a.finish()

    def party(ctx):
        c = TeeClient("tee", Policy.of(["secure_sum"], max_rounds=1), root=prov.root(), allowed=[MEAS])
        g = c.attach(ctx)
        total = secure_sum_client(g, "tee", vecs[ctx.self_name], list(vecs), "r0")
        c.finish()
        return total, c.heads

    out = run_threads({"tee": agg, **{p: party for p in vecs}}, timeout=30)
    for p in vecs:
        np.testing.assert_allclose(out[p][0], sum(vecs.values()), atol=1e-9)
    res = verify_log(tmp_path / "s.jsonl", heads=out["a"][1])
    assert res.ok, res.error
    assert sum(e["op"] == "secure_sum" for e in res.entries) == 4  # 3 shares in, 1 sum out


def test_classify_tags():
    assert classify("train/p0/e3/b1/g") == ("lr.open_gradient", "p0/e3")
    assert classify("p1/e0/stop") == ("lr.loss", "p1/e0")
    assert classify("train/pubkey") == ("lr.setup", None)
    assert classify("train/tee/sum/r0/in") == ("secure_sum", "sum:r0")
    assert classify("train/p0/e0/b0/raw_features")[0] == "unknown"


def test_round_limit_counts_the_rounds_before_a_resumed_epoch(tmp_path):
    # a resumed run starts at a later epoch in a fresh aggregator process: epoch e of a
    # problem implies its epochs 0..e, so max_rounds holds across --resume
    agg = TeeAggregator(SimulatedProvider(), MEAS, ["host"], tmp_path / "a.jsonl", grace=0)
    agg.policies = {"host": Policy.of(OPERATIONS, max_rounds=3)}
    agg._authorize("lr.open_gradient", "p0/e1", ["host"], "train/p0/e1/b0/g")  # 2 rounds so far
    agg._authorize("lr.open_gradient", "p0/e2", ["host"], "train/p0/e2/b0/g")  # 3
    with pytest.raises(PolicyError, match=r"round p0/e3 would exceed its limit of 3 round\(s\) \(4 with"):
        agg._authorize("lr.open_gradient", "p0/e3", ["host"], "train/p0/e3/b0/g")
    fresh = TeeAggregator(SimulatedProvider(), MEAS, ["host"], tmp_path / "b.jsonl", grace=0)
    fresh.policies = {"host": Policy.of(OPERATIONS, max_rounds=3)}
    with pytest.raises(PolicyError, match="round p0/e3 would exceed"):
        fresh._authorize("lr.open_gradient", "p0/e3", ["host"], "train/p0/e3/b0/g")


def test_secure_sum_refuses_values_it_cannot_add_exactly():
    from types import SimpleNamespace

    from hefl.errors import DataError
    from hefl.tee.aggregator import masked_sum_share

    me = SimpleNamespace(self_name="a")
    for bad in ([3e9, 1.0], [float("nan")], [float("inf")]):
        with pytest.raises(DataError, match="is not finite or not below"):
            masked_sum_share(me, np.array(bad), ["a", "b"], "r0")
