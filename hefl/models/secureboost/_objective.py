"""Training objectives: gradients, hessians, intercepts and output transforms.

Everything here runs on the active party (the label holder). Margins are always 2-D,
``(n_samples, n_outputs)``, with ``n_outputs == 1`` for binary and regression tasks, so
the tree code never special-cases the single-output shape.

The conventions follow XGBoost 3.x, against which the core is tested:

================== ============================== ==================================
objective          gradient / hessian             intercept (``base_score=None``)
================== ============================== ==================================
binary:logistic    g = p - y, h = max(p(1-p),eps)  logit(weighted mean of y)
multi:softprob     g = p_k - [y=k],                log p_k - mean_k log p_k with
                   h = max(2 p_k (1-p_k), eps)     p_k the weighted class frequency
reg:squarederror   g = f - y, h = 1                weighted mean of y
================== ============================== ==================================

(``eps = 1e-16``; sample weights multiply g and h.) The factor 2 in the softmax hessian
is XGBoost's: it upper-bounds the diagonal of the softmax Hessian and keeps the Newton
steps of the K per-class leaf values conservative.

An explicit ``base_score`` is read like XGBoost reads it: a probability for
``binary:logistic`` (margin ``logit(base_score)``), the margin itself for every class of
``multi:softprob``, and the prediction itself for ``reg:squarederror``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hefl.errors import ConfigError, DataError

__all__ = [
    "BinaryLogistic",
    "Objective",
    "SoftmaxMultiClass",
    "SquaredError",
    "get_objective",
]

_HESS_EPS = 1e-16  # XGBoost's kRtEps floor on logistic/softmax hessians
_PROB_EPS = 1e-6  # XGBoost clips class frequencies here before taking logs

FloatArray = NDArray[np.float64]


def _sigmoid(x: FloatArray) -> FloatArray:
    # split by sign so exp() never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _softmax(m: FloatArray) -> FloatArray:
    z = m - m.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _weights(sample_weight: ArrayLike | None, n: int) -> FloatArray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise DataError(f"sample_weight has {w.shape[0]} entries for {n} samples")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DataError("sample_weight must be finite and non-negative")
    return w


class Objective(ABC):
    """A twice-differentiable training loss.

    Attributes
    ----------
    name : str
        XGBoost-compatible objective name.
    n_outputs : int
        Number of margins per sample (K).
    """

    name: str = ""
    n_outputs: int = 1

    # ---------------------------------------------------------------- labels
    @abstractmethod
    def check_labels(self, y: ArrayLike) -> FloatArray:
        """Validate ``y`` and return it as a float vector of shape (n_samples,)."""

    # ------------------------------------------------------------- intercept
    @abstractmethod
    def init_margin(self, y: ArrayLike, sample_weight: ArrayLike | None = None) -> FloatArray:
        """Intercept estimated from the labels, as margins of shape (n_outputs,)."""

    @abstractmethod
    def margin_from_base_score(self, base_score: float) -> FloatArray:
        """Margins of shape (n_outputs,) for a user-given ``base_score``."""

    # -------------------------------------------------------------- gradients
    @abstractmethod
    def gradients(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """First and second derivatives of the loss at ``margin``.

        Parameters
        ----------
        y : ndarray of shape (n_samples,)
            Labels as returned by :meth:`check_labels`.
        margin : ndarray of shape (n_samples, n_outputs)
            Current raw predictions.
        sample_weight : ndarray of shape (n_samples,), optional

        Returns
        -------
        grad, hess : ndarray of shape (n_samples, n_outputs)
        """

    def gh(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> FloatArray:
        """Gradients in the histogram layout: ``(n_samples, 2*n_outputs)``, ``[g | h]``.

        Values are rounded to float32 (and returned as float64): XGBoost keeps g and h
        as float32, and rounding the same way makes boundary decisions such as
        ``H == min_child_weight`` come out as in XGBoost. Histogram sums stay float64.
        """
        g, h = self.gradients(y, margin, sample_weight)
        gh = np.concatenate([g, h], axis=1)
        return gh.astype(np.float32).astype(np.float64)

    # ------------------------------------------------------------ predictions
    @abstractmethod
    def transform(self, margin: FloatArray) -> FloatArray:
        """Map margins to predictions (probabilities or values)."""

    @abstractmethod
    def loss(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> float:
        """Default evaluation metric (lower is better) used for early stopping."""

    @property
    def metric_name(self) -> str:
        """Name of the metric computed by :meth:`loss`."""
        return "loss"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (see :func:`get_objective`)."""
        return {"name": self.name, "n_outputs": self.n_outputs}


class BinaryLogistic(Objective):
    """Logistic loss for labels in {0, 1} (``binary:logistic``)."""

    name = "binary:logistic"
    n_outputs = 1

    def check_labels(self, y: ArrayLike) -> FloatArray:
        arr = np.asarray(y, dtype=np.float64).reshape(-1)
        if not np.all((arr == 0) | (arr == 1)):
            bad = arr[~((arr == 0) | (arr == 1))][:3]
            raise DataError(f"binary:logistic needs labels in {{0, 1}}, got e.g. {bad.tolist()}")
        return arr

    def init_margin(self, y: ArrayLike, sample_weight: ArrayLike | None = None) -> FloatArray:
        yy = self.check_labels(y)
        w = _weights(sample_weight, yy.size)
        p = float(np.average(yy, weights=w)) if yy.size else 0.5
        return self.margin_from_base_score(float(np.clip(p, _PROB_EPS, 1.0 - _PROB_EPS)))

    def margin_from_base_score(self, base_score: float) -> FloatArray:
        if not 0.0 < base_score < 1.0:
            raise ConfigError(f"base_score for binary:logistic must be in (0, 1), got {base_score}")
        return np.array([np.log(base_score / (1.0 - base_score))])

    def gradients(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        p = _sigmoid(margin[:, 0])
        g = p - y
        h = np.maximum(p * (1.0 - p), _HESS_EPS)
        if sample_weight is not None:
            g *= sample_weight
            h *= sample_weight
        return g[:, None], h[:, None]

    def transform(self, margin: FloatArray) -> FloatArray:
        return _sigmoid(np.asarray(margin, dtype=np.float64).reshape(-1))

    def loss(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> float:
        m = margin[:, 0]
        # log(1 + exp(m)) - y*m, stable for large |m|
        ll = np.logaddexp(0.0, m) - y * m
        return float(np.average(ll, weights=sample_weight))

    @property
    def metric_name(self) -> str:
        return "logloss"


class SoftmaxMultiClass(Objective):
    """Softmax cross-entropy for labels in {0, …, K-1} (``multi:softprob``).

    Parameters
    ----------
    n_classes : int
        Number of classes K (>= 2).
    """

    name = "multi:softprob"

    def __init__(self, n_classes: int) -> None:
        if int(n_classes) < 2:
            raise ConfigError(f"multi:softprob needs at least 2 classes, got {n_classes}")
        self.n_outputs = int(n_classes)

    def check_labels(self, y: ArrayLike) -> FloatArray:
        arr = np.asarray(y, dtype=np.float64).reshape(-1)
        ok = (arr == np.round(arr)) & (arr >= 0) & (arr < self.n_outputs)
        if not np.all(ok):
            raise DataError(
                f"multi:softprob with {self.n_outputs} classes needs integer labels in "
                f"[0, {self.n_outputs - 1}], got e.g. {arr[~ok][:3].tolist()}"
            )
        return arr

    def init_margin(self, y: ArrayLike, sample_weight: ArrayLike | None = None) -> FloatArray:
        yy = self.check_labels(y).astype(np.int64)
        w = _weights(sample_weight, yy.size)
        counts = np.bincount(yy, weights=w, minlength=self.n_outputs).astype(np.float64)
        total = counts.sum()
        p = counts / total if total > 0 else np.full(self.n_outputs, 1.0 / self.n_outputs)
        logp = np.log(np.maximum(p, _PROB_EPS))
        # softmax is shift invariant; centring keeps the intercept small
        return logp - logp.mean()

    def margin_from_base_score(self, base_score: float) -> FloatArray:
        return np.full(self.n_outputs, float(base_score))

    def gradients(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        p = _softmax(np.asarray(margin, dtype=np.float64))
        g = p.copy()
        g[np.arange(y.size), y.astype(np.int64)] -= 1.0
        h = np.maximum(2.0 * p * (1.0 - p), _HESS_EPS)
        if sample_weight is not None:
            g *= sample_weight[:, None]
            h *= sample_weight[:, None]
        return g, h

    def transform(self, margin: FloatArray) -> FloatArray:
        return _softmax(np.asarray(margin, dtype=np.float64))

    def loss(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> float:
        m = np.asarray(margin, dtype=np.float64)
        mx = m.max(axis=1)
        lse = mx + np.log(np.exp(m - mx[:, None]).sum(axis=1))
        ll = lse - m[np.arange(y.size), y.astype(np.int64)]
        return float(np.average(ll, weights=sample_weight))

    @property
    def metric_name(self) -> str:
        return "mlogloss"


class SquaredError(Objective):
    """Half squared error ``(f - y)^2 / 2`` (``reg:squarederror``)."""

    name = "reg:squarederror"
    n_outputs = 1

    def check_labels(self, y: ArrayLike) -> FloatArray:
        arr = np.asarray(y, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(arr)):
            raise DataError("reg:squarederror needs finite labels")
        return arr

    def init_margin(self, y: ArrayLike, sample_weight: ArrayLike | None = None) -> FloatArray:
        yy = self.check_labels(y)
        w = _weights(sample_weight, yy.size)
        return np.array([float(np.average(yy, weights=w)) if yy.size else 0.0])

    def margin_from_base_score(self, base_score: float) -> FloatArray:
        return np.array([float(base_score)])

    def gradients(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        g = margin[:, 0] - y
        h = np.ones_like(g)
        if sample_weight is not None:
            g *= sample_weight
            h = h * sample_weight
        return g[:, None], h[:, None]

    def transform(self, margin: FloatArray) -> FloatArray:
        return np.asarray(margin, dtype=np.float64).reshape(-1)

    def loss(
        self, y: FloatArray, margin: FloatArray, sample_weight: FloatArray | None = None
    ) -> float:
        return float(np.sqrt(np.average((margin[:, 0] - y) ** 2, weights=sample_weight)))

    @property
    def metric_name(self) -> str:
        return "rmse"


_ALIASES = {
    "binary:logistic": "binary:logistic",
    "multi:softprob": "multi:softprob",
    "multi:softmax": "multi:softprob",  # same training; only the output differs
    "reg:squarederror": "reg:squarederror",
}


def get_objective(name: str, n_classes: int | None = None) -> Objective:
    """Build an objective from its XGBoost name.

    Parameters
    ----------
    name : {"binary:logistic", "multi:softprob", "multi:softmax", "reg:squarederror"}
    n_classes : int, optional
        Required for the multi-class objectives.

    Returns
    -------
    Objective
    """
    key = _ALIASES.get(name)
    if key is None:
        raise ConfigError(f"unknown objective {name!r}; expected one of {sorted(_ALIASES)}")
    if key == "binary:logistic":
        return BinaryLogistic()
    if key == "reg:squarederror":
        return SquaredError()
    if n_classes is None:
        raise ConfigError(f"objective {name!r} needs n_classes")
    return SoftmaxMultiClass(int(n_classes))
