"""scikit-learn façades: :class:`HeteroLogisticRegression`, :class:`HeteroLinearRegression`.

``fit(X, y)`` splits the columns among simulated parties with the ``parties=`` spec and
runs the role classes of :mod:`hefl.models.hetero_lr._roles` — one process per party over
loopback ZeroMQ by default (``transport="processes"``), or threads over in-memory channels
(``transport="threads"``, for tests).  The fitted estimator then holds every party's block
of ``coef_`` so it can predict on its own; in a real deployment each party only learns its
own block (and the active party the intercept).
"""

from __future__ import annotations

import math
import secrets

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from hefl.errors import ConfigError, DataError

from .._input import validated_fit, validated_predict
from .._parties import TRANSPORTS, resolve_parties
from ._core import LRConfig, sigmoid
from ._roles import ActiveParty, Arbiter, PassiveParty

__all__ = ["HeteroLinearRegression", "HeteroLogisticRegression"]

ARBITER_NAME = "arbiter"


class _HeteroLRBase(BaseEstimator):
    _task = "logistic"

    def __init__(
        self,
        *,
        parties=None,
        protocol: str = "two_party",
        he: str = "ckks",
        key_size: int = 2048,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        batch_size: int = 1024,
        alpha: float = 1e-4,
        penalty: str | None = "l2",
        fit_intercept: bool = True,
        tol: float | None = 1e-4,
        optimizer: str = "nesterov",
        random_state=None,
        n_jobs: int | None = None,
        backend: str = "auto",
        transport: str = "processes",
        allow_insecure: bool = False,
        timeout: float = 3600.0,
    ):
        self.parties = parties
        self.protocol = protocol
        self.he = he
        self.key_size = key_size
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.alpha = alpha
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.optimizer = optimizer
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.backend = backend
        self.transport = transport
        self.allow_insecure = allow_insecure
        self.timeout = timeout

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.he == "ckks"
        return tags

    # ------------------------------------------------------------------ federation
    def _config(self, spec) -> LRConfig:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        arbiter = ARBITER_NAME if self.protocol == "arbiter" else None
        if arbiter is not None and arbiter in spec.names:
            raise ConfigError(f"the party name {arbiter!r} is reserved for the arbiter of protocol='arbiter'")
        penalty = None if self.penalty in (None, "none") else self.penalty
        return LRConfig(
            task=self._task, protocol=self.protocol, he=self.he, key_size=self.key_size,
            allow_insecure=bool(self.allow_insecure), learning_rate=self.learning_rate,
            max_iter=self.max_iter, batch_size=self.batch_size, alpha=self.alpha, penalty=penalty,
            fit_intercept=bool(self.fit_intercept), tol=self.tol, optimizer=self.optimizer,
            taylor=getattr(self, "taylor", "anchored"), n_jobs=None if self.n_jobs == -1 else self.n_jobs,
            backend=self.backend, active=spec.active,
            passives=tuple(spec.passive), arbiter=arbiter,
            recv_timeout=float(self.timeout),
        ).validate()

    def _federated_fit(self, X: np.ndarray, targets: np.ndarray) -> None:
        """Run the roles; store ``coef_`` (n_problems, n_features) and friends."""
        spec = resolve_parties(self.parties, X.shape[1], getattr(self, "feature_names_in_", None))
        cfg = self._config(spec)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1)) \
            if self.random_state is not None else secrets.randbits(62)
        roles = {spec.active: ActiveParty(spec.block(X, spec.active), targets, cfg, seed=seed).run}
        for p in spec.passive:
            roles[p] = PassiveParty(spec.block(X, p), cfg).run
        if cfg.arbiter:
            roles[cfg.arbiter] = Arbiter(cfg).run
        from hefl.federation import run_local, run_threads

        if self.transport == "threads":
            results = run_threads(roles, timeout=float(self.timeout), recv_timeout=float(self.timeout))
        else:
            results = run_local(roles, timeout=float(self.timeout), recv_timeout=float(self.timeout))
        act = results[spec.active]
        n_problems = len(act["coef"])
        coef = np.zeros((n_problems, X.shape[1]))
        for c in range(n_problems):
            coef[c, spec.columns[spec.active]] = act["coef"][c]
            for p in spec.passive:
                coef[c, spec.columns[p]] = results[p]["coef"][c]
        self._coef = coef
        self._intercept = np.asarray(act["intercept"], dtype=np.float64)
        self.n_iter_ = int(max(act["n_iter"]))
        curves = results[cfg.arbiter]["loss_curve"] if cfg.arbiter else act["loss_curve"]
        self.loss_curve_ = curves[0] if n_problems == 1 else curves
        self.epoch_seconds_ = [t for ts in act["epoch_seconds"] for t in ts]
        self.parties_ = {name: spec.columns[name].copy() for name in spec.names}


class HeteroLogisticRegression(ClassifierMixin, _HeteroLRBase):
    """Vertical logistic regression over HE: parties hold columns, one of them the labels.

    Trains ``mean(ℓ) + alpha/2·‖w‖²`` (``penalty="l2"``; the intercept is not penalised)
    by mini-batch gradient descent, with the cross-party terms encrypted (Paillier or CKKS)
    and masked.  Matching scikit-learn: ``LogisticRegression(C=1 / (alpha·n_samples))``.
    More than two classes: one-vs-rest, one binary model per class.

    Parameters
    ----------
    parties : dict, optional
        Party name → its columns (indices, or names for a DataFrame); the first party is
        the active one (labels).  Default: two halves, ``"guest"`` (active) and ``"host"``.
    protocol : {"two_party", "arbiter"}, default="two_party"
        ``"two_party"``: no third party, each party holds its own key, the residual exists
        only as a sum of the active party's plaintext part and the encrypted cross term,
        gradients come back through random masks.  ``"arbiter"``: Hardy et al.; a third
        party ``"arbiter"`` holds the key and opens masked gradients (the TEE aggregator's
        role).
    he : {"ckks", "paillier", "mock"}, default="ckks"
        ``"ckks"`` (TenSEAL; fast; approximate: ≈1e-6 relative error on the encrypted sums
        plus 2^-10 flooding noise on decryptions, statistical masks — see
        :mod:`hefl.models.hetero_lr._engine`; one passive party), ``"paillier"`` (exact
        fixed point, any number of passive parties), ``"mock"`` (Paillier's algebra in the
        clear, tests only; gives the same weights as ``"paillier"`` for the same seed).
    key_size : int, default=2048
        Paillier modulus bits (below 2048 needs ``allow_insecure=True``).
    learning_rate : float, default=0.1
    max_iter : int, default=100
        Epochs.
    batch_size : int, default=1024
    alpha : float, default=1e-4
        Regularisation strength.
    penalty : {"l2", "l1", None}, default="l2"
        ``"l1"`` uses a proximal (soft-threshold) step.
    fit_intercept : bool, default=True
        The intercept belongs to the active party.
    tol : float or None, default=1e-4
        Stop when the epoch loss changes by less than ``tol``; ``None`` runs ``max_iter``.
    optimizer : {"nesterov", "momentum", "sgd", "adagrad", "adam"}, default="nesterov"
        Each party updates its own block with it.
    taylor : {"anchored", "zero"}, default="anchored"
        Where the loss is expanded: around the active party's own score (exact sigmoid of
        what it knows, second-order Taylor only in the passive parties' score) or around 0
        (FATE's ``¼·u + ½ − y`` residual).
    random_state : int, RandomState or None
        Seeds the batch order (all randomness that affects the weights; masks cancel).
    n_jobs : int, optional
        Threads per party for the Paillier arithmetic (default or -1: all cores).
    backend : {"auto", "cpu", "gpu"}, default="auto"
        Paillier compute backend.
    transport : {"processes", "threads"}, default="processes"
    allow_insecure : bool, default=False
        Allow Paillier keys below 2048 bits (tests only).
    timeout : float, default=3600
        Bound on the whole run and on every receive (s).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray
    n_iter_ : int
        Epochs run (the most over the one-vs-rest problems).
    loss_curve_ : list of float (list of lists for one-vs-rest)
        Epoch loss: mean over the epoch's batches (before each update) of the loss
        expanded to second order in the passive parties' score — exact where that score
        is 0; a documented approximation of the log-loss otherwise — plus the penalty.
    epoch_seconds_ : list of float
        Wall time of each epoch as measured by the active party.
    parties_ : dict
        Party name → column indices.
    n_features_in_ : int
    feature_names_in_ : ndarray, when fitted on a DataFrame
    """

    _task = "logistic"

    def __init__(self, *, parties=None, protocol: str = "two_party", he: str = "ckks", key_size: int = 2048,
                 learning_rate: float = 0.1, max_iter: int = 100, batch_size: int = 1024, alpha: float = 1e-4,
                 penalty: str | None = "l2", fit_intercept: bool = True, tol: float | None = 1e-4,
                 optimizer: str = "nesterov", taylor: str = "anchored", random_state=None,
                 n_jobs: int | None = None, backend: str = "auto", transport: str = "processes",
                 allow_insecure: bool = False, timeout: float = 3600.0):
        super().__init__(parties=parties, protocol=protocol, he=he, key_size=key_size,
                         learning_rate=learning_rate, max_iter=max_iter, batch_size=batch_size, alpha=alpha,
                         penalty=penalty, fit_intercept=fit_intercept, tol=tol, optimizer=optimizer,
                         random_state=random_state, n_jobs=n_jobs, backend=backend,
                         transport=transport, allow_insecure=allow_insecure, timeout=timeout)
        self.taylor = taylor

    def fit(self, X, y):
        X, y = validated_fit(self, X, y, allow_nan=False, classifier=True, y_numeric=False)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        codes = enc.transform(y)
        if len(self.classes_) < 2:
            raise DataError(f"this solver needs samples of at least 2 classes in the data, but the data "
                            f"contains only 1 class: {self.classes_[0]!r}")
        if len(self.classes_) == 2:
            targets = codes.astype(np.float64)[:, None]
        else:
            targets = (codes[:, None] == np.arange(len(self.classes_))[None, :]).astype(np.float64)
        self._federated_fit(X, targets)
        self.coef_ = self._coef
        self.intercept_ = self._intercept
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        X = validated_predict(self, X, allow_nan=False)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = sigmoid(scores)
            return np.column_stack([1.0 - p, p])
        p = sigmoid(scores)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]


class HeteroLinearRegression(RegressorMixin, _HeteroLRBase):
    """Vertical linear (ridge) regression over HE; parameters as
    :class:`HeteroLogisticRegression`.

    Minimises ``½·mean((Xw + b − y)²) + alpha/2·‖w‖²`` (exact: no approximation of the
    loss is needed); this is ``sklearn.linear_model.Ridge(alpha=alpha·n_samples)``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_iter_ : int
    loss_curve_ : list of float
    epoch_seconds_ : list of float
    parties_ : dict
    n_features_in_ : int
    """

    _task = "linear"

    def fit(self, X, y):
        X, y = validated_fit(self, X, y, allow_nan=False, classifier=False, y_numeric=True)
        self._federated_fit(X, np.asarray(y, dtype=np.float64)[:, None])
        self.coef_ = self._coef[0]
        self.intercept_ = float(self._intercept[0])
        return self

    def predict(self, X):
        check_is_fitted(self, "coef_")
        X = validated_predict(self, X, allow_nan=False)
        return X @ self.coef_ + self.intercept_
