"""The federated SecureBoost protocol: lossless, private, and as good as XGBoost."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from hefl.errors import ConfigError, DataError
from hefl.models.secureboost import PlainBooster, SecureBoostClassifier, SecureBoostRegressor

from .helpers import load_dataset, make_data

FAST = dict(transport="threads", he="mock", random_state=0)


def _parties(d: int, cut: int | None = None) -> dict:
    cut = d // 2 if cut is None else cut
    return {"guest": list(range(cut)), "host": list(range(cut, d))}


def test_paillier_equals_mock_and_matches_plaintext_core():
    X, y = make_data("binary", n=400, d=6, nan=0.1, seed=1)
    params = dict(n_estimators=3, max_depth=3, learning_rate=0.3, max_bin=16, random_state=0,
                  transport="threads", parties=_parties(6))
    mock = SecureBoostClassifier(he="mock", **params).fit(X, y)
    pail = SecureBoostClassifier(he="paillier", key_size=1024, allow_insecure=True, backend="cpu",
                                 **params).fit(X, y)
    pm, pp = mock.predict_proba(X)[:, 1], pail.predict_proba(X)[:, 1]
    assert np.max(np.abs(pm - pp)) <= 1e-12  # lossless: the same trees, bit for bit
    # every phase is timed, start-up included (key generation, binning, the passive kit)
    guest, host = pail.timings_["guest"], pail.timings_["host"]
    assert {"keygen", "binning", "encrypt", "decrypt", "network"} <= set(guest)
    assert {"setup", "histograms", "compress"} <= set(host)
    assert all(v >= 0 for v in [*guest.values(), *host.values()])
    # the plaintext core (exact float gradients) grows the same trees up to quantisation
    ref = PlainBooster(objective="binary:logistic", n_estimators=3, max_depth=3, learning_rate=0.3,
                       max_bin=16).fit(X, y)
    np.testing.assert_allclose(mock.decision_function(X), ref.predict_margin(X)[:, 0], atol=1e-5)


def test_quality_breast_and_credit_vs_xgboost():
    import xgboost as xgb

    params = dict(n_estimators=30, max_depth=3, learning_rate=0.3, max_bin=32)
    for name, n in (("breast", None), ("default_credit", 6000)):
        X, y = load_dataset(name)
        if n:
            X, y = X[:n], y[:n]
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        ours = SecureBoostClassifier(**params, parties=_parties(X.shape[1], 10), **FAST).fit(Xtr, ytr)
        auc = roc_auc_score(yte, ours.predict_proba(Xte)[:, 1])
        ref = roc_auc_score(yte, xgb.XGBClassifier(**params, tree_method="hist", n_jobs=1)
                            .fit(Xtr, ytr).predict_proba(Xte)[:, 1])
        assert auc >= 0.99 * ref, (name, auc, ref)


def test_multiclass_and_regression_vs_xgboost():
    import xgboost as xgb

    params = dict(n_estimators=30, max_depth=3, learning_rate=0.3, max_bin=32)
    X, y = load_dataset("vehicle_scale")
    accs, refs = [], []
    for seed in range(3):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
        clf = SecureBoostClassifier(**params, parties=_parties(X.shape[1]), **FAST).fit(Xtr, ytr)
        assert clf.predict_proba(Xte).shape == (len(yte), 4)
        accs.append(np.mean(clf.predict(Xte) == yte))
        refs.append(np.mean(xgb.XGBClassifier(**params, tree_method="hist", n_jobs=1).fit(Xtr, ytr)
                            .predict(Xte) == yte))
    assert np.mean(accs) >= 0.98 * np.mean(refs)
    X, y = load_dataset("motor")
    errs, refs = [], []
    for seed in range(3):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed)
        reg = SecureBoostRegressor(**params, parties=_parties(X.shape[1], 4), **FAST).fit(Xtr, ytr)
        errs.append(np.sqrt(np.mean((reg.predict(Xte) - yte) ** 2)))
        refs.append(np.sqrt(np.mean((xgb.XGBRegressor(**params, tree_method="hist", n_jobs=1)
                                     .fit(Xtr, ytr).predict(Xte) - yte) ** 2)))
    assert np.mean(errs) <= 1.02 * np.mean(refs)


def test_nan_subsample_colsample_lossguide_and_early_stopping():
    X, y = make_data("binary", n=600, d=8, nan=0.2, seed=4)
    clf = SecureBoostClassifier(n_estimators=40, max_depth=0, max_leaves=6, grow_policy="lossguide",
                                subsample=0.8, colsample_bytree=0.7, early_stopping_rounds=3,
                                parties=_parties(8, 3), **FAST).fit(X, y)
    assert "validation_0" in clf.evals_result_
    assert clf.n_estimators_ == clf.best_iteration_ + 1 <= 40
    assert roc_auc_score(y, clf.predict_proba(X)[:, 1]) > 0.8
    imp = clf.feature_importances_
    assert imp.shape == (8,) and abs(imp.sum() - 1) < 1e-9


@pytest.mark.parametrize("subsample", [1.0, 0.6])
def test_column_sampling_matches_the_plaintext_core(subsample):
    # columns sampled per tree: the passive party shows its features at shuffled positions,
    # so the active party must not apply the mask to those positions (it did: a passive
    # feature was searched only where both masks allowed it, and fits were not reproducible)
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=10, n_informative=6, random_state=0)
    common = {"n_estimators": 10, "max_depth": 3, "random_state": 7, "colsample_bytree": 0.5,
              "subsample": subsample}
    fed = [SecureBoostClassifier(**common, parties={"a": [0, 1], "b": list(range(2, 10))}, he="mock",
                                 transport="threads").fit(X, y) for _ in range(2)]
    plain = PlainBooster(**common).fit(X, y, feature_blocks=(2, 8))
    np.testing.assert_allclose(fed[0].decision_function(X), plain.predict_margin(X)[:, 0], atol=1e-6)
    assert np.array_equal(fed[0].predict_proba(X), fed[1].predict_proba(X))


def test_three_parties_and_column_names():
    import pandas as pd

    X, y = make_data("reg", n=300, d=6, seed=5)
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(6)])
    parties = {"bank": ["c0", "c1"], "insurer": ["c2", "c3"], "hospital": ["c4", "c5"]}
    reg = SecureBoostRegressor(n_estimators=5, max_depth=3, parties=parties, **FAST).fit(df, y)
    assert list(reg.parties_) == ["bank", "insurer", "hospital"]
    assert reg.score(df, y) > 0.5
    with pytest.raises(ConfigError):
        SecureBoostRegressor(parties={"a": ["c0"], "b": ["zz"]}, **FAST).fit(df, y)


def test_save_load_predicts_the_same(tmp_path):
    X, y = make_data("multi", n=300, d=8, seed=6)
    clf = SecureBoostClassifier(n_estimators=4, max_depth=3, parties=_parties(8), **FAST).fit(X, y)
    clf.save_model(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["estimator.json", "guest.json", "host.json"]
    back = SecureBoostClassifier.load_model(tmp_path / "m")
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_a_loaded_model_checks_dataframe_columns_as_the_fitted_one(tmp_path):
    import pandas as pd

    X, y = make_data("binary", n=200, d=6, seed=7)
    df = pd.DataFrame(X[:, :4], columns=["a", "b", "c", "d"])
    clf = SecureBoostClassifier(n_estimators=2, max_depth=2, parties={"g": ["a", "b"], "h": ["c", "d"]},
                                **FAST).fit(df, y)
    clf.save_model(tmp_path / "m")
    back = SecureBoostClassifier.load_model(tmp_path / "m")
    assert list(back.feature_names_in_) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.predict_proba(df), clf.predict_proba(df))
    for est in (clf, back):  # reordered columns are refused, not scored as they come
        with pytest.raises(DataError, match="feature names"):
            est.predict_proba(df[["d", "c", "b", "a"]])


def test_party_columns_names_and_n_jobs_are_checked():
    X, y = make_data("binary", n=120, d=6, seed=8)
    with pytest.raises(ConfigError, match=r"column\(s\) \[5\] belong to no party"):
        SecureBoostClassifier(parties={"a": [0, 1, 2], "b": [3, 4]}, **FAST).fit(X, y)
    with pytest.raises(ConfigError, match="'estimator' is reserved"):
        SecureBoostClassifier(parties={"bank": [0, 1, 2], "estimator": [3, 4, 5]}, **FAST).fit(X, y)
    with pytest.raises(ConfigError, match="n_jobs must be None or -1"):
        SecureBoostClassifier(n_jobs=0, parties=_parties(6), **FAST).fit(X, y)
    clf = SecureBoostClassifier(n_estimators=1, max_depth=2, n_jobs=-1, parties=_parties(6), **FAST).fit(X, y)
    assert clf.predict(X).shape == (120,)


def test_bad_input():
    X, y = make_data("binary", n=50, d=8, seed=7)
    with pytest.raises(DataError, match="one class"):
        SecureBoostClassifier(**FAST).fit(X, np.zeros(50))
    with pytest.raises(ConfigError):
        SecureBoostClassifier(he="rsa", **{k: v for k, v in FAST.items() if k != "he"}).fit(X, y)
    with pytest.raises(ValueError):
        SecureBoostRegressor(**FAST).fit(X, np.full(50, np.nan))


@pytest.mark.slow
def test_real_paillier_2048_over_processes():
    X, y = make_data("binary", n=300, d=6, seed=8)
    params = dict(n_estimators=2, max_depth=3, random_state=0, parties=_parties(6))
    real = SecureBoostClassifier(he="paillier", key_size=2048, backend="cpu", **params).fit(X, y)
    mock = SecureBoostClassifier(he="mock", transport="threads", **params).fit(X, y)
    np.testing.assert_allclose(real.predict_proba(X), mock.predict_proba(X), atol=1e-12)


def test_fewer_values_per_compressed_ciphertext_give_the_same_model(monkeypatch):
    # the active party may ask for fewer values per compressed ciphertext than fit (what a
    # GPU prefers); the passive party packs as told and the trees stay the same
    from hefl.he.base import AdditiveKit

    X, y = make_data("binary", n=300, d=6, nan=0.1, seed=3)
    params = dict(n_estimators=2, max_depth=3, max_bin=8, parties=_parties(6), **FAST)
    seen: list[int] = []
    real = AdditiveKit.shift_and_pack

    def spy(self, ca, width_bits, per_plaintext):
        seen.append(per_plaintext)
        return real(self, ca, width_bits, per_plaintext)

    monkeypatch.setattr(AdditiveKit, "shift_and_pack", spy)
    ref = SecureBoostClassifier(**params).fit(X, y).predict_proba(X)
    assert len(set(seen)) == 1 and seen[0] > 2
    most = seen[0]  # a CPU (here: mock) kit packs as many as fit
    for forced in ("2", "1", "max"):
        seen.clear()
        monkeypatch.setenv("HEFL_SB_COMPRESS_SLOTS", forced)
        got = SecureBoostClassifier(**params).fit(X, y).predict_proba(X)
        assert np.array_equal(got, ref)
        assert set(seen) == {most if forced == "max" else int(forced)}
    for bad in ("0", "many"):
        monkeypatch.setenv("HEFL_SB_COMPRESS_SLOTS", bad)
        with pytest.raises(ConfigError, match="HEFL_SB_COMPRESS_SLOTS"):
            SecureBoostClassifier(**params).fit(X, y)
