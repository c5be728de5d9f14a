"""hefl: homomorphic-encryption-first vertical federated learning.

The estimators most users start from are re-exported here; everything else lives in
its layer (:mod:`hefl.he`, :mod:`hefl.federation`, :mod:`hefl.psi`, :mod:`hefl.models`).
"""

__version__ = "0.1.0"

__all__ = [
    "SecureBoostClassifier",
    "SecureBoostRegressor",
    "HeteroLogisticRegression",
    "HeteroLinearRegression",
]


def __getattr__(name: str):
    # lazy: `import hefl` stays cheap (no scikit-learn / TenSEAL import until used)
    if name in ("SecureBoostClassifier", "SecureBoostRegressor"):
        from hefl.models import secureboost

        return getattr(secureboost, name)
    if name in ("HeteroLogisticRegression", "HeteroLinearRegression"):
        from hefl.models import hetero_lr

        return getattr(hetero_lr, name)
    raise AttributeError(f"module 'hefl' has no attribute {name!r}")
