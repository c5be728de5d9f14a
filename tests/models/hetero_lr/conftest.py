"""Shared helpers for the hetero-LR tests: the example datasets, standardised, split by party."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def load_dataset(name: str, n_rows: int | None = None, test_size: float = 0.3, seed: int = 0):
    """(Xtr, Xte, ytr, yte, n_guest_columns): guest columns first, standardised on train."""
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    guest = pd.read_csv(DATA_DIR / f"{name}_hetero_guest.csv")
    host = pd.read_csv(DATA_DIR / f"{name}_hetero_host.csv")
    key, label = guest.columns[0], guest.columns[1]
    df = guest.merge(host, on=key, suffixes=("_g", "_h"))
    y = df[label].to_numpy()
    X = df.drop(columns=[key, label]).to_numpy(dtype=float)
    if n_rows is not None:
        X, y = X[:n_rows], y[:n_rows]
    classification = name != "motor"
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed,
                                          stratify=y if classification else None)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte, guest.shape[1] - 2


def parties_for(n_guest: int, n_features: int) -> dict:
    return {"guest": list(range(n_guest)), "host": list(range(n_guest, n_features))}


@pytest.fixture(autouse=True)
def _quiet_mock_warning():
    # the mock kit warns on every keygen; the tests use it on purpose
    logger = logging.getLogger("hefl.he.mock")
    old = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(old)
