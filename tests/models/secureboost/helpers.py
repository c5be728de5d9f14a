"""Shared helpers for the SecureBoost core tests: synthetic data, the test datasets, and
XGBoost trained on exactly the same bins."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2] / "data"

OBJECTIVES = {
    "binary": "binary:logistic",
    "reg": "reg:squarederror",
    "multi": "multi:softprob",
}


def make_data(
    task: str, n: int = 1000, d: int = 8, nan: float = 0.0, seed: int = 0, n_classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Non-linear synthetic task with optional missing values (NaN)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    f = 1.5 * X[:, 0] - X[:, 1] ** 2 + np.sin(2 * X[:, 2]) + 0.5 * X[:, 3] * X[:, 4]
    if task == "binary":
        y = (f + rng.normal(scale=0.8, size=n) > 0).astype(float)
    elif task == "reg":
        y = f + rng.normal(scale=0.3, size=n)
    else:
        scores = np.stack([f, X[:, 5] - X[:, 0], 2 * X[:, 6], X[:, 7]], axis=1)[:, :n_classes]
        y = (scores + rng.normal(scale=0.5, size=scores.shape)).argmax(axis=1).astype(float)
    if nan:
        X[rng.random(X.shape) < nan] = np.nan
    return X, y


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Guest and host columns of a test dataset joined on the row key, label separate."""
    import pandas as pd

    guest = pd.read_csv(DATA_DIR / f"{name}_hetero_guest.csv")
    host = pd.read_csv(DATA_DIR / f"{name}_hetero_host.csv")
    key = guest.columns[0]
    label = guest.columns[1]
    df = guest.merge(host, on=key, suffixes=("_g", "_h"))
    y = df[label].to_numpy(dtype=float)
    X = df.drop(columns=[key, label]).to_numpy(dtype=float)
    return X, y


def xgb_on_codes(codes: np.ndarray, missing_bin: int, y: np.ndarray, params: dict,
                 rounds: int, weight: np.ndarray | None = None):
    """Train XGBoost on integer bin codes given as float features (missing -> NaN).

    With ``max_bin`` above the number of codes every distinct code is its own XGBoost
    bin, so XGBoost sees exactly the candidate splits our core sees.
    """
    import xgboost as xgb

    feats = codes.astype(np.float32)
    feats[codes == missing_bin] = np.nan
    p = {"tree_method": "hist", "max_bin": 256, "nthread": 1, "seed": 0}
    p.update(params)
    dtrain = xgb.DMatrix(feats, label=y, weight=weight, missing=np.nan)
    booster = xgb.train(p, dtrain, rounds)
    margin = booster.predict(xgb.DMatrix(feats, missing=np.nan), output_margin=True)
    return booster, margin.reshape(codes.shape[0], -1)
