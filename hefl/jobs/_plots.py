"""PNG plots (matplotlib, Agg backend): ROC curve, training loss, feature importance.

Plots are a convenience: when matplotlib is missing or a plot fails, the job goes on and
the party log says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hefl._atomic import atomic_path

__all__ = ["matplotlib_available", "plot_importance", "plot_loss", "plot_roc"]

log = logging.getLogger("hefl.jobs")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save(fig, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]], title: str) -> Path:
    """``curves``: data set name -> (fpr, tpr, auc)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        label = f"{name} (AUC {auc:.4f})" if auc is not None else name
        ax.plot(fpr, tpr, label=label, lw=1.8 if name == "test" else 1.2,
                ls="-" if name != "train" else "--")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_loss(path: Path, metric: str, series: dict[str, list[float]], title: str, xlabel: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) <= 40 else None,
                    ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend()
    return _save(fig, path)


def plot_importance(path: Path, importance: dict[str, float], title: str, xlabel: str,
                    top: int = 30) -> Path:
    plt = _pyplot()
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top]
    items = items[::-1]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * len(items) + 1.2)))
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="#4472c4")
    else:
        ax.text(0.5, 0.5, "no splits on this party's features", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)
