"""scikit-learn façades: ``SecureBoostClassifier`` and ``SecureBoostRegressor``.

``fit(X, y)`` splits the columns among simulated parties (``parties=``), then runs the
real protocol — :class:`~._federated.ActiveParty` and :class:`~._federated.PassiveParty`
— with one process per party over loopback ZeroMQ (``transport="processes"``, the
default) or as threads over an in-memory channel (``transport="threads"``, for tests).
The secret key is generated inside the active party.  A real deployment runs the same
roles through the job runner, one party per host.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from hefl._atomic import atomic_write_text, json_default
from hefl.errors import ConfigError, DataError
from hefl.models._input import validated_fit, validated_predict
from hefl.models._parties import TRANSPORTS, resolve_parties

from ._federated import ActiveParty, BoostParams, PassiveParty, predict_active, predict_passive
from ._objective import get_objective

__all__ = ["SecureBoostClassifier", "SecureBoostRegressor", "make_kit", "save_party_model", "load_party_model",
           "strict_json_model"]

HE_SCHEMES = ("paillier", "ou", "mock")


def make_kit(he: str, key_size: int, backend: str, n_jobs: int | None, allow_insecure: bool):
    """The active party's secret kit for ``he`` ("paillier", "ou" or "mock")."""
    if he == "paillier":
        from hefl.he import paillier

        return paillier.keygen(key_size, backend=backend, n_jobs=n_jobs, allow_insecure=allow_insecure)
    if he == "ou":
        from hefl.he import ou  # type: ignore[attr-defined]

        return ou.keygen(key_size, backend=backend, n_jobs=n_jobs, allow_insecure=allow_insecure)
    if he == "mock":
        from hefl.he import mock

        return mock.keygen(key_size)
    raise ConfigError(f"he must be one of {HE_SCHEMES}, got {he!r}")


def save_party_model(path: str | os.PathLike, model: dict) -> None:
    """Write one party's model as JSON, atomically (write, then rename)."""
    atomic_write_text(path, json.dumps(model, allow_nan=False, default=json_default))


def load_party_model(path: str | os.PathLike) -> dict:
    """Read a party's model written by :func:`save_party_model` (plain JSON, never pickle)."""
    model = json.loads(Path(path).read_text())
    if model.get("kind") not in ("SecureBoostActive", "SecureBoostPassive"):
        raise DataError(f"{path} is not a SecureBoost party model")
    return model


def strict_json_model(model: dict) -> dict:
    """Make passive thresholds strict JSON (±inf as strings)."""
    if model.get("kind") == "SecureBoostPassive":
        for s in model["splits"]:
            t = float(s["threshold"])
            s["threshold"] = t if np.isfinite(t) else ("inf" if t > 0 else "-inf")
    return model


class _SecureBoostBase(BaseEstimator):
    def __init__(self, *, n_estimators: int = 100, learning_rate: float = 0.3, max_depth: int = 6,
                 max_leaves: int = 0, grow_policy: str = "depthwise", max_bin: int = 32,
                 reg_lambda: float = 1.0, gamma: float = 0.0, min_child_weight: float = 1.0,
                 subsample: float = 1.0, colsample_bytree: float = 1.0, early_stopping_rounds: int | None = None,
                 validation_fraction: float = 0.1, base_score: float | None = None,
                 random_state: int | None = None, n_jobs: int | None = None, he: str = "paillier",
                 key_size: int = 2048, backend: str = "auto", parties: dict | None = None,
                 transport: str = "processes", allow_insecure: bool = False):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.grow_policy = grow_policy
        self.max_bin = max_bin
        self.reg_lambda = reg_lambda
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.base_score = base_score
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.he = he
        self.key_size = key_size
        self.backend = backend
        self.parties = parties
        self.transport = transport
        self.allow_insecure = allow_insecure

    # -- helpers -----------------------------------------------------------------------
    def _check_params(self) -> None:
        # types first: a string where a number belongs is named here, not by float() deep in fit
        for name in ("learning_rate", "reg_lambda", "gamma", "min_child_weight", "subsample", "colsample_bytree",
                     "validation_fraction", "base_score"):
            v = getattr(self, name)
            if v is None and name == "base_score":
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
        for name in ("n_estimators", "max_depth", "max_leaves", "max_bin", "key_size", "early_stopping_rounds",
                     "random_state", "n_jobs"):
            v = getattr(self, name)
            if v is None and name in ("early_stopping_rounds", "random_state", "n_jobs"):
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in ("max_depth", "max_leaves", "reg_lambda"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.n_jobs is not None and self.n_jobs != -1 and self.n_jobs < 1:
            raise ConfigError(f"n_jobs must be None or -1 (every core) or a positive integer, got {self.n_jobs!r}")
        if self.early_stopping_rounds is not None and self.early_stopping_rounds < 1:
            raise ConfigError(f"early_stopping_rounds must be None or >= 1, got {self.early_stopping_rounds!r}")
        if self.he not in HE_SCHEMES:
            raise ConfigError(f"he must be one of {HE_SCHEMES}, got {self.he!r}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if not isinstance(self.n_estimators, (int, np.integer)) or self.n_estimators < 1:
            raise ConfigError(f"n_estimators must be a positive integer, got {self.n_estimators!r}")
        if not 0 < float(self.subsample) <= 1 or not 0 < float(self.colsample_bytree) <= 1:
            raise ConfigError("subsample and colsample_bytree must be in (0, 1]")
        if not 0 < float(self.validation_fraction) < 1:
            raise ConfigError("validation_fraction must be in (0, 1)")
        if not isinstance(self.max_bin, (int, np.integer)) or not 2 <= self.max_bin <= 65535:
            raise ConfigError(f"max_bin must be an integer in [2, 65535], got {self.max_bin!r}")

    def _run(self, fns: dict):
        from hefl.federation import run_local, run_threads

        if self.transport == "threads":
            return run_threads(fns, timeout=24 * 3600.0)
        return run_local(fns, timeout=24 * 3600.0, recv_timeout=3600.0)

    def _boost_params(self, objective: str, n_classes: int | None) -> BoostParams:
        return BoostParams(
            objective=objective, n_classes=n_classes, n_estimators=int(self.n_estimators),
            learning_rate=float(self.learning_rate), max_depth=int(self.max_depth), max_leaves=int(self.max_leaves),
            grow_policy=self.grow_policy, max_bin=int(self.max_bin), reg_lambda=float(self.reg_lambda),
            gamma=float(self.gamma), min_child_weight=float(self.min_child_weight), subsample=float(self.subsample),
            colsample_bytree=float(self.colsample_bytree),
            early_stopping_rounds=None if self.early_stopping_rounds is None else int(self.early_stopping_rounds),
            validation_fraction=float(self.validation_fraction), base_score=self.base_score,
            random_state=self.random_state,
        )

    def _fit(self, X, y: np.ndarray, objective: str, n_classes: int | None):
        self._check_params()
        names = getattr(self, "feature_names_in_", None)
        spec = resolve_parties(self.parties, X.shape[1], list(names) if names is not None else None)
        if "estimator" in spec.names:
            raise ConfigError("the party name 'estimator' is reserved (save_model writes estimator.json "
                              "beside <party>.json); name the party otherwise")
        # a passive party with no columns has nothing to contribute
        members = [spec.active] + [p for p in spec.passive if spec.columns[p].size]
        self.parties_ = {p: spec.columns[p].tolist() for p in members}
        params = self._boost_params(objective, n_classes)
        active = spec.active
        he, key_size, backend = self.he, int(self.key_size), self.backend
        n_jobs = None if self.n_jobs in (None, -1) else int(self.n_jobs)  # None: every core
        # choosing he="mock" in the façade is the explicit opt-in to plaintext "ciphertexts"
        insecure = bool(self.allow_insecure) or he == "mock"
        Xa = spec.block(X, active)

        def run_active(ctx):
            t = time.perf_counter()
            kit = make_kit(he, key_size, backend, n_jobs, insecure)  # the secret key is born here
            party = ActiveParty(ctx, Xa, y, params, kit, members[1:], n_jobs=n_jobs)
            party.timer.add("keygen", time.perf_counter() - t)  # with the HE backend's start-up
            return party.fit()

        fns = {active: run_active}
        for p in members[1:]:
            Xp = spec.block(X, p)
            fns[p] = (lambda Xp_: lambda ctx: PassiveParty(ctx, Xp_, active, n_jobs=n_jobs, allow_insecure=insecure,
                                                             backend=backend).serve())(Xp)
        results = self._run(fns)
        self.models_ = {name: strict_json_model(results[name]) for name in members}
        am = self.models_[active]
        self.n_estimators_ = len(am["trees"])
        self.best_iteration_ = am["best_iteration"]
        self.evals_result_ = {"training": {am["metric"]: am["train_loss"]}}
        if am["valid_loss"]:
            self.evals_result_["validation_0"] = {am["metric"]: am["valid_loss"]}
        self.timings_ = {name: m.get("timings", {}) for name, m in self.models_.items()}
        return self

    def _margin(self, X) -> np.ndarray:
        check_is_fitted(self, "models_")
        X = validated_predict(self, X, allow_nan=True)
        members = list(self.parties_)
        active = members[0]
        Xa = X[:, self.parties_[active]]
        am = self.models_[active]
        fns = {active: lambda ctx: predict_active(ctx, am, Xa)}
        for p in members[1:]:
            Xp, pm = X[:, self.parties_[p]], self.models_[p]
            fns[p] = (lambda Xp_, pm_: lambda ctx: predict_passive(ctx, pm_, Xp_, active))(Xp, pm)
        return self._run(fns)[active]

    @property
    def feature_importances_(self) -> np.ndarray:
        """Average gain of the splits on each feature, normalised to sum 1 (XGBoost's "gain")."""
        check_is_fitted(self, "models_")
        members = list(self.parties_)
        total = np.zeros(self.n_features_in_)
        count = np.zeros(self.n_features_in_)
        am = self.models_[members[0]]
        for t in am["trees"]:
            for nid, left in enumerate(t["left"]):
                if left < 0:
                    continue
                b, f = t["block"][nid], t["feature"][nid]
                party = members[b]
                local = f if b == 0 else self.models_[party]["splits"][f]["feature"]
                col = self.parties_[party][local]
                total[col] += t["gain"][nid]
                count[col] += 1
        avg = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        s = avg.sum()
        return avg / s if s > 0 else avg

    def save_model(self, directory: str | os.PathLike) -> None:
        """Write each party's part as its own JSON file (``<party>.json``) plus ``estimator.json``."""
        check_is_fitted(self, "models_")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, model in self.models_.items():
            save_party_model(d / f"{name}.json", model)
        meta = {"kind": type(self).__name__, "parties": self.parties_, "params": self.get_params(deep=False),
                "n_features_in": int(self.n_features_in_),
                "classes": getattr(self, "classes_", np.array([])).tolist()}
        if hasattr(self, "feature_names_in_"):  # a loaded model checks a DataFrame's columns too
            meta["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        atomic_write_text(d / "estimator.json", json.dumps(meta, default=json_default))

    @classmethod
    def load_model(cls, directory: str | os.PathLike):
        """Rebuild an estimator written by :meth:`save_model`; it predicts exactly as before."""
        d = Path(directory)
        meta = json.loads((d / "estimator.json").read_text())
        if meta.get("kind") != cls.__name__:
            raise DataError(f"{d} holds a {meta.get('kind')}, not a {cls.__name__}")
        est = cls(**meta["params"])
        est.parties_ = {k: list(v) for k, v in meta["parties"].items()}
        est.models_ = {name: load_party_model(d / f"{name}.json") for name in est.parties_}
        est.n_features_in_ = meta["n_features_in"]
        if meta.get("feature_names_in") is not None:
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        if meta.get("classes"):
            est.classes_ = np.asarray(meta["classes"])
        am = est.models_[next(iter(est.parties_))]
        est.n_estimators_ = len(am["trees"])
        est.best_iteration_ = am["best_iteration"]
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class SecureBoostClassifier(ClassifierMixin, _SecureBoostBase):
    """Vertical federated gradient boosting for classification (binary and multi-class).

    Lossless against XGBoost's ``hist`` method: every party's split candidates are
    evaluated on exact (fixed-point) gradient sums.  Multi-class problems train one
    multi-output tree per round with all classes' g/h packed into one ciphertext per
    sample when they fit.  Parameters follow XGBoost's names; ``he``, ``key_size``,
    ``backend``, ``parties`` and ``transport`` choose the cryptography and the federation.
    """

    def fit(self, X, y):
        self._check_params()
        X, y = validated_fit(self, X, y, allow_nan=True, classifier=True)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        yi = enc.transform(y)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise DataError(f"the label has only one class ({self.classes_[0]!r}); need at least two classes")
        if n_classes == 2:
            return self._fit(X, yi.astype(np.float64), "binary:logistic", None)
        return self._fit(X, yi.astype(np.float64), "multi:softprob", n_classes)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "models_")
        margin = self._margin(X)
        am = self.models_[next(iter(self.parties_))]
        obj = get_objective(am["objective"]["name"], am["objective"].get("n_outputs"))
        p = obj.transform(margin)
        if len(self.classes_) == 2:
            p = np.asarray(p).reshape(-1)
            return np.column_stack([1 - p, p])
        return np.asarray(p)

    def decision_function(self, X) -> np.ndarray:
        m = self._margin(X)
        return m[:, 0] if m.shape[1] == 1 else m

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "models_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class SecureBoostRegressor(RegressorMixin, _SecureBoostBase):
    """Vertical federated gradient boosting for regression (squared error)."""

    def fit(self, X, y):
        self._check_params()
        X, y = validated_fit(self, X, y, allow_nan=True, classifier=False, y_numeric=True)
        if not np.all(np.isfinite(y)):
            raise DataError("the label contains NaN or infinity")
        return self._fit(X, np.asarray(y, dtype=np.float64), "reg:squarederror", None)

    def predict(self, X) -> np.ndarray:
        return self._margin(X)[:, 0]
