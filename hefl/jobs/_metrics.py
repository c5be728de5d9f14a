"""Evaluation metrics on the active party (the only party that holds the label)."""

from __future__ import annotations

import numpy as np

__all__ = ["compute_metrics", "ks_statistic", "roc_points"]


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: the largest gap between the TPR and FPR curves."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr - fpr))


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    return fpr, tpr


def compute_metrics(task: str, names: list[str], y: np.ndarray, proba: np.ndarray,
                    threshold: float = 0.5) -> dict[str, float | None]:
    """Metrics for one data set.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    names : list of str
        Metric names (see :data:`hefl.jobs.config.METRICS`).
    y : ndarray
        Encoded labels (class indices) for classification, values for regression.
    proba : ndarray
        P(class 1) of shape (n,) for binary, (n, K) probabilities for multiclass,
        predictions for regression.
    threshold : float
        Binary decision threshold for accuracy / precision / recall / f1.

    Returns
    -------
    dict
        ``None`` where a metric is undefined (e.g. AUC with one class in the set).
    """
    from sklearn import metrics as skm

    out: dict[str, float | None] = {}
    y = np.asarray(y)
    p = np.asarray(proba, dtype=np.float64)
    one_class = task != "regression" and np.unique(y).size < 2
    for m in names:
        if task == "binary":
            pred = (p >= threshold).astype(int)
            if m == "auc":
                out[m] = None if one_class else float(skm.roc_auc_score(y, p))
            elif m == "ks":
                out[m] = None if one_class else ks_statistic(y, p)
            elif m == "accuracy":
                out[m] = float(skm.accuracy_score(y, pred))
            elif m == "logloss":
                out[m] = float(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
            elif m == "precision":
                out[m] = float(skm.precision_score(y, pred, zero_division=0))
            elif m == "recall":
                out[m] = float(skm.recall_score(y, pred, zero_division=0))
            elif m == "f1":
                out[m] = float(skm.f1_score(y, pred, zero_division=0))
        elif task == "multiclass":
            k = p.shape[1]
            if m == "accuracy":
                out[m] = float(skm.accuracy_score(y, np.argmax(p, axis=1)))
            elif m == "logloss":
                out[m] = float(skm.log_loss(y, np.clip(p, 1e-15, 1.0), labels=list(range(k))))
            elif m == "auc":
                present = np.unique(y)
                if present.size < k:
                    out[m] = None  # one-vs-rest AUC needs every class in the set
                else:
                    out[m] = float(skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(k))))
        else:
            if m == "rmse":
                out[m] = float(np.sqrt(np.mean((p - y) ** 2)))
            elif m == "mae":
                out[m] = float(np.mean(np.abs(p - y)))
            elif m == "r2":
                out[m] = float(skm.r2_score(y, p)) if y.size > 1 else None
    return out
