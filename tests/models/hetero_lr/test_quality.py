"""Model quality against scikit-learn: AUC within 1% relative of LogisticRegression with the
matching L2 penalty (breast, default_credit; both protocols, all three HE kits), RMSE within
2% relative of Ridge (motor).

``alpha`` here is the per-sample penalty of ``mean(loss) + alpha/2·‖w‖²``, so the matching
scikit-learn models are ``LogisticRegression(C=1/(alpha·n))`` and ``Ridge(alpha=alpha·n)``.
default_credit uses its first 6,000 rows (as the acceptance check does) so that the
Paillier and CKKS runs stay within the test budget; the mock kit also runs on all 30,000.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error, roc_auc_score

from hefl.models.hetero_lr import HeteroLinearRegression, HeteroLogisticRegression

from .conftest import load_dataset, parties_for

COMMON = {"key_size": 1024, "allow_insecure": True, "transport": "threads", "random_state": 0, "tol": None}
ALPHA = 1e-3

DATASETS = {
    # name: (rows, max_iter, batch_size)
    "breast": (None, 5, 256),
    "default_credit": (6000, 3, 512),
}


@pytest.fixture(scope="module")
def data():
    out = {}
    for name, (rows, *_rest) in DATASETS.items():
        Xtr, Xte, ytr, yte, ng = load_dataset(name, n_rows=rows)
        ref = LogisticRegression(C=1 / (ALPHA * len(ytr)), max_iter=5000).fit(Xtr, ytr)
        out[name] = (Xtr, Xte, ytr, yte, ng, roc_auc_score(yte, ref.decision_function(Xte)))
    return out


@pytest.mark.parametrize("protocol", ["two_party", "arbiter"])
@pytest.mark.parametrize("he", ["mock", "paillier", "ckks"])
@pytest.mark.parametrize("name", list(DATASETS))
def test_auc_within_one_percent_of_sklearn(data, name, he, protocol):
    Xtr, Xte, ytr, yte, ng, auc_ref = data[name]
    _, max_iter, batch = DATASETS[name]
    est = HeteroLogisticRegression(he=he, protocol=protocol, parties=parties_for(ng, Xtr.shape[1]),
                                   max_iter=max_iter, batch_size=batch, alpha=ALPHA, **COMMON).fit(Xtr, ytr)
    auc = roc_auc_score(yte, est.predict_proba(Xte)[:, 1])
    assert auc >= 0.99 * auc_ref, f"{name} {he}/{protocol}: AUC {auc:.4f} vs scikit-learn {auc_ref:.4f}"
    assert est.n_iter_ == max_iter and len(est.loss_curve_) == max_iter
    assert np.all(np.isfinite(est.loss_curve_)) and est.loss_curve_[-1] < est.loss_curve_[0]


@pytest.mark.parametrize("protocol", ["two_party"])
def test_auc_on_all_of_default_credit_with_mock(protocol):
    Xtr, Xte, ytr, yte, ng = load_dataset("default_credit")
    ref = LogisticRegression(C=1 / (ALPHA * len(ytr)), max_iter=5000).fit(Xtr, ytr)
    est = HeteroLogisticRegression(he="mock", protocol=protocol, parties=parties_for(ng, Xtr.shape[1]),
                                   max_iter=2, batch_size=1024, alpha=ALPHA, **COMMON).fit(Xtr, ytr)
    auc, auc_ref = roc_auc_score(yte, est.decision_function(Xte)), roc_auc_score(yte, ref.decision_function(Xte))
    assert auc >= 0.99 * auc_ref


@pytest.mark.parametrize("he,protocol", [("mock", "two_party"), ("mock", "arbiter"), ("ckks", "two_party")])
def test_rmse_within_two_percent_of_ridge_on_motor(he, protocol):
    Xtr, Xte, ytr, yte, ng = load_dataset("motor")
    alpha = 1e-2
    est = HeteroLinearRegression(he=he, protocol=protocol, parties=parties_for(ng, Xtr.shape[1]), max_iter=30,
                                 batch_size=1024, alpha=alpha, **COMMON).fit(Xtr, ytr)
    ref = Ridge(alpha=alpha * len(ytr)).fit(Xtr, ytr)
    rmse, rmse_ref = (mean_squared_error(yte, m.predict(Xte)) ** 0.5 for m in (est, ref))
    assert rmse <= 1.02 * rmse_ref, f"{he}/{protocol}: RMSE {rmse:.4f} vs Ridge {rmse_ref:.4f}"
    assert est.coef_.shape == (Xtr.shape[1],) and isinstance(est.intercept_, float)
