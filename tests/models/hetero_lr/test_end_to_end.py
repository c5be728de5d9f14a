"""Real keys, real processes: Paillier-2048 over loopback ZeroMQ, one process per party."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hefl.models.hetero_lr import HeteroLogisticRegression

from .conftest import load_dataset, parties_for


@pytest.mark.slow
def test_paillier_2048_two_party_over_processes_matches_mock():
    Xtr, Xte, ytr, yte, ng = load_dataset("breast")
    params = {"parties": parties_for(ng, Xtr.shape[1]), "protocol": "two_party", "max_iter": 1,
              "batch_size": 512, "random_state": 3, "tol": None}
    real = HeteroLogisticRegression(he="paillier", key_size=2048, transport="processes", **params).fit(Xtr, ytr)
    mock = HeteroLogisticRegression(he="mock", key_size=2048, transport="threads", **params).fit(Xtr, ytr)
    np.testing.assert_allclose(real.coef_, mock.coef_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(real.intercept_, mock.intercept_, atol=1e-6, rtol=0)
    assert roc_auc_score(yte, real.predict_proba(Xte)[:, 1]) > 0.95
    assert set(real.parties_) == {"guest", "host"} and real.epoch_seconds_[0] > 0
