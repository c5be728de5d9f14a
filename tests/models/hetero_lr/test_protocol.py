"""The federated protocols against the plaintext reference, mock/Paillier parity, several
passive parties, one-vs-rest.  What every party receives: tests/reliability/test_leaks.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils import check_random_state

from hefl.errors import ConfigError, DataError
from hefl.federation import run_threads
from hefl.models.hetero_lr import (
    ActiveParty,
    HeteroLinearRegression,
    HeteroLogisticRegression,
    LRConfig,
    PassiveParty,
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
                                 **SMALL).fit(Xtr[:, :2], ytr)


def test_misaligned_rows_are_refused():
    cfg = LRConfig(he="mock", key_size=512, max_iter=1).validate()
    roles = {"guest": ActiveParty(np.zeros((10, 2)), np.zeros(10), cfg, seed=1).run,
             "host": PassiveParty(np.zeros((9, 2)), cfg).run}
    with pytest.raises(DataError, match="align the rows"):
        run_threads(roles, timeout=30)


def test_received_sizes_are_the_ones_agreed_at_setup():
    # what a key holder decrypts for a peer is bounded by the counts agreed at setup
    from hefl.errors import ProtocolError
    from hefl.he import mock
    from hefl.models.hetero_lr._roles import MAX_FEATURES, _check_setup, _shaped

    kit = mock.keygen()
    good = {"seed": 1, "n_problems": 1, "width": 8, "n_samples": 10, "columns": {"guest": 3, "host": 2}}
    assert _check_setup(good, "guest", parties=["guest"], own=("host", 2)) is good
    with pytest.raises(ProtocolError, match="says 'host' has 5 columns, it has 2"):
        _check_setup({**good, "columns": {"guest": 3, "host": 5}}, "guest", own=("host", 2))
    for bad in (-2, MAX_FEATURES + 1, "3", True):
        with pytest.raises(ProtocolError, match="valid column count of 'guest'"):
            _check_setup({**good, "columns": {"guest": bad, "host": 2}}, "guest", parties=["guest"])
    ca = kit.encrypt(np.zeros(6))
    assert _shaped(ca, (6,), "host", "g") is ca
    with pytest.raises(ProtocolError, match=r"expected ciphertexts of shape \(4,\), got \(6,\)"):
        _shaped(ca, (4,), "host", "g")
