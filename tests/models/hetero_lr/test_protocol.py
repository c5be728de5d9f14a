"""The federated protocols against the plaintext reference, mock/Paillier parity, several
passive parties, one-vs-rest, and what every party receives (the leak test)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.utils import check_random_state

from hefl.errors import ConfigError, DataError
from hefl.federation import run_threads
from hefl.he.base import CipherArray
from hefl.he.ckks import CKKSArray
from hefl.models.hetero_lr import (
    ActiveParty,
    Arbiter,
    HeteroLinearRegression,
    HeteroLogisticRegression,
    LRConfig,
    PassiveParty,
    _roles,
    plain_fit,
)

from .conftest import load_dataset

SMALL = {"key_size": 1024, "allow_insecure": True, "transport": "threads", "random_state": 0}


@pytest.fixture(scope="module")
def breast():
    return load_dataset("breast")


def _seed(random_state):
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _three_parties(n_features):
    cut = np.array_split(np.arange(n_features), 3)
    return {"guest": list(cut[0]), "host": list(cut[1]), "host2": list(cut[2])}


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
@pytest.mark.parametrize("task", ["logistic", "linear"])
def test_mock_run_follows_the_plaintext_reference(breast, protocol, task):
    Xtr, _, ytr, _, ng = breast
    X, y = Xtr[:300], ytr[:300].astype(float)
    if task == "linear":
        y = X[:, :5] @ np.arange(1, 6) + 0.1
    est = (HeteroLogisticRegression if task == "logistic" else HeteroLinearRegression)(
        he="mock", protocol=protocol, max_iter=4, batch_size=128, tol=None, alpha=1e-3,
        parties={"guest": list(range(ng)), "host": list(range(ng, X.shape[1]))}, **SMALL).fit(X, y)
    cfg = LRConfig(task=task, max_iter=4, batch_size=128, tol=None, alpha=1e-3)
    ref = plain_fit([X[:, :ng], X[:, ng:]], y, cfg, _seed(0))
    # the same steps up to the fixed-point quantisation of the plaintext matrices (13 bits)
    coef = est.coef_.ravel()
    np.testing.assert_allclose(coef, np.concatenate(ref["coef"]), atol=1e-3 * max(1, np.abs(coef).max()))
    np.testing.assert_allclose(np.ravel(est.intercept_)[0], ref["intercept"], atol=1e-3)
    np.testing.assert_allclose(est.loss_curve_, ref["loss_curve"], rtol=1e-3)
    assert est.n_iter_ == 4


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
def test_mock_and_paillier_give_the_same_weights(breast, protocol):
    Xtr, _, ytr, _, _ = breast
    X, y = Xtr[:200], ytr[:200]
    fits = {he: HeteroLogisticRegression(he=he, protocol=protocol, max_iter=3, batch_size=64, **SMALL).fit(X, y)
            for he in ("mock", "paillier")}
    np.testing.assert_allclose(fits["mock"].coef_, fits["paillier"].coef_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fits["mock"].intercept_, fits["paillier"].intercept_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fits["mock"].loss_curve_, fits["paillier"].loss_curve_, atol=1e-9)


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
def test_several_passive_parties(breast, protocol):
    Xtr, _, ytr, _, _ = breast
    X, y = Xtr[:160], ytr[:160]
    parties = _three_parties(X.shape[1])
    fits = {he: HeteroLogisticRegression(he=he, protocol=protocol, parties=parties, max_iter=2, batch_size=64,
                                         tol=None, **SMALL).fit(X, y)
            for he in ("mock", "paillier")}
    np.testing.assert_allclose(fits["mock"].coef_, fits["paillier"].coef_, atol=1e-6, rtol=0)
    cfg = LRConfig(max_iter=2, batch_size=64, tol=None)
    ref = plain_fit([X[:, parties[p]] for p in parties], y, cfg, _seed(0))
    np.testing.assert_allclose(fits["mock"].coef_.ravel(), np.concatenate(ref["coef"]), atol=2e-4)
    assert set(fits["mock"].parties_) == set(parties)


def test_one_vs_rest_on_vehicle():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    Xtr, Xte, ytr, yte, _ = load_dataset("vehicle_scale")
    est = HeteroLogisticRegression(he="mock", max_iter=15, batch_size=256, learning_rate=0.3, alpha=1e-3,
                                   **SMALL).fit(Xtr, ytr)
    ref = OneVsRestClassifier(LogisticRegression(C=1 / (1e-3 * len(ytr)), max_iter=5000)).fit(Xtr, ytr)
    assert est.coef_.shape == (4, Xtr.shape[1]) and est.intercept_.shape == (4,)
    assert len(est.loss_curve_) == 4
    proba = est.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert est.score(Xte, yte) >= ref.score(Xte, yte) - 0.05
    assert set(est.predict(Xte)) <= set(est.classes_)


def test_ckks_needs_exactly_one_passive_party(breast):
    Xtr, _, ytr, _, _ = breast
    with pytest.raises(ConfigError, match="one passive party"):
        HeteroLogisticRegression(he="ckks", parties=_three_parties(Xtr.shape[1]), **SMALL).fit(Xtr, ytr)


def test_reserved_arbiter_name(breast):
    Xtr, _, ytr, _, _ = breast
    with pytest.raises(ConfigError, match="reserved"):
        HeteroLogisticRegression(he="mock", protocol="arbiter", parties={"guest": [0], "arbiter": [1]},
                                 **SMALL).fit(Xtr, ytr)


def test_misaligned_rows_are_refused():
    cfg = LRConfig(he="mock", key_size=512, max_iter=1).validate()
    roles = {"guest": ActiveParty(np.zeros((10, 2)), np.zeros(10), cfg, seed=1).run,
             "host": PassiveParty(np.zeros((9, 2)), cfg).run}
    with pytest.raises(DataError, match="align the rows"):
        run_threads(roles, timeout=30)


# ----------------------------------------------------------------------------- leak test


class Recorder:
    """Wraps a PartyContext and records everything the party receives."""

    def __init__(self, ctx, log):
        self._ctx, self._log = ctx, log

    def sub(self, name):
        return Recorder(self._ctx.sub(name), self._log)

    def recv(self, peer, tag, timeout=None):
        obj = self._ctx.recv(peer, tag, timeout)
        self._log.append((peer, self._ctx.tag(tag), obj))
        return obj

    def gather(self, tag, peers=None, timeout=None):
        got = self._ctx.gather(tag, peers, timeout)
        for peer, obj in got.items():
            self._log.append((peer, self._ctx.tag(tag), obj))
        return got

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def _run_recorded(monkeypatch, he, protocol, blocks, y, max_iter=2, batch_size=64):
    names = ["guest", "host", "host2"][: len(blocks)]
    cfg = LRConfig(he=he, protocol=protocol, key_size=1024, allow_insecure=True, max_iter=max_iter,
                   batch_size=batch_size, tol=None, active="guest", passives=tuple(names[1:]),
                   arbiter="arbiter" if protocol == "arbiter" else None).validate()
    kits, logs = {}, {}
    real = _roles.keygen

    def keygen(*a, **k):
        kit = real(*a, **k)
        kits[threading.current_thread().name.removeprefix("hefl-party-")] = kit
        return kit

    monkeypatch.setattr(_roles, "keygen", keygen)
    roles = {"guest": ActiveParty(blocks[0], y, cfg, seed=7)}
    for name, blk in zip(names[1:], blocks[1:]):
        roles[name] = PassiveParty(blk, cfg)
    if cfg.arbiter:
        roles["arbiter"] = Arbiter(cfg)

    def wrap(name, role):
        logs[name] = []
        return lambda ctx: role.run(Recorder(ctx, logs[name]))

    results = run_threads({n: wrap(n, r) for n, r in roles.items()}, timeout=300)
    return cfg, kits, logs, results


def _plain_floats(objs):
    """Every plaintext real a party received (ciphertexts, key bytes, the integer setup
    values and flags excluded; opened Paillier residues are checked separately)."""
    out = []
    for leaf in _leaves(objs):
        if isinstance(leaf, (CipherArray, CKKSArray, bytes, str, bool, int)) or leaf is None:
            continue
        arr = np.asarray(leaf)
        if arr.dtype == np.uint64:
            continue
        out.extend(np.asarray(arr, dtype=np.float64).ravel().tolist())
    return np.array(out)


def _uniform(row, n):
    r = int.from_bytes(np.ascontiguousarray(row, dtype="<u8").tobytes(), "little") / n
    return 1e-9 < r < 1 - 1e-9


@pytest.mark.parametrize("he,protocol,n_parties", [
    ("paillier", "two_party", 3), ("paillier", "arbiter", 3), ("ckks", "two_party", 2), ("ckks", "arbiter", 2),
])
def test_no_party_receives_plaintext_secrets(monkeypatch, breast, he, protocol, n_parties):
    Xtr, _, ytr, _, _ = breast
    X, y = Xtr[:128], ytr[:128].astype(float)
    cols = np.array_split(np.arange(X.shape[1]), n_parties)
    blocks = [X[:, c] for c in cols]
    cfg, kits, logs, results = _run_recorded(monkeypatch, he, protocol, blocks, y)
    names = ["guest", "host", "host2"][:n_parties]
    # the run itself is right: it follows the plaintext reference (Paillier up to the 13-bit
    # quantisation of the plaintext matrices; CKKS also up to its approximation and noise)
    ref = plain_fit(blocks, y, cfg, 7)
    for k, name in enumerate(names):
        np.testing.assert_allclose(results[name]["coef"][0], ref["coef"][k], atol=1e-3)
    secrets_of = {name: [blk.ravel()] for name, blk in zip(names, blocks)}  # features
    secrets_of["guest"] += [results["guest"]["coef"][0], np.array(results["guest"]["intercept"])]
    for name in names[1:]:
        secrets_of[name].append(results[name]["coef"][0])
    assert set(logs) == set(names) | ({"arbiter"} if cfg.arbiter else set())
    for receiver, log in logs.items():
        assert log, f"{receiver} received nothing"
        floats = _plain_floats([obj for _, _, obj in log])
        # labels: no received plaintext array is a 0/1 vector
        for _, tag, obj in log:
            for leaf in _leaves(obj):
                if isinstance(leaf, np.ndarray) and leaf.dtype != np.uint64 and leaf.size > 1:
                    assert not np.all(np.isin(leaf, (0.0, 1.0))), f"{receiver}: labels under {tag}"
        # features and weights of the others: none of their values appears in the clear
        for owner, secrets in secrets_of.items():
            if owner == receiver:
                continue
            for secret in secrets:
                informative = np.round(secret[np.abs(secret) > 1e-6], 9)
                hits = np.isin(np.round(floats, 9), informative).sum()
                assert hits == 0, f"{receiver} received {hits} plaintext values of {owner}'s secrets"
        # opened values coming back are masked: uniform residues (Paillier) / large (CKKS)
        for peer, tag, obj in log:
            if not tag.endswith(("/gd", "/qd")):
                continue
            if he == "paillier":
                n = kits[peer].n  # opened by the sender, under its own key
                assert all(_uniform(row, n) for row in obj), f"{receiver}: unmasked value under {tag}"
            else:
                assert np.all(np.abs(obj) > 1.0), f"{receiver}: unmasked CKKS value under {tag}"
        # ciphertexts under the receiver's own key open to masked values only (two-party:
        # the active party legitimately opens the passive parties' loss pieces, last entry)
        own = kits.get(receiver)
        for peer, tag, obj in log if own is not None else []:
            for leaf in _leaves(obj):
                if not (isinstance(leaf, (CipherArray, CKKSArray)) and own.same_key(leaf.kit)):
                    continue
                # meaningful entries: the sender's columns (+ intercept) and its loss piece
                n_masked = blocks[names.index(peer)].shape[1] + (peer == "guest") + 1
                if cfg.arbiter is None and receiver == "guest":
                    n_masked -= 1  # the passive's loss piece is the active party's to read
                if he == "paillier":
                    assert all(_uniform(r, own.n) for r in own.decrypt_raw(leaf)[:n_masked]), f"{receiver}: {tag}"
                else:
                    assert np.all(np.abs(own.decrypt(leaf)[:n_masked]) > 1.0), f"{receiver}: {tag}"


