"""Vertical (hetero) logistic and linear regression over Paillier or CKKS.

>>> from hefl.models.hetero_lr import HeteroLogisticRegression
>>> clf = HeteroLogisticRegression(parties={"guest": [0, 1, 2], "host": [3, 4]},
...                                he="ckks", protocol="two_party")      # doctest: +SKIP
>>> clf.fit(X, y).predict_proba(X)                                      # doctest: +SKIP

The estimators are façades over the role classes :class:`ActiveParty` (labels),
:class:`PassiveParty` and :class:`Arbiter`, which talk through a
:class:`~hefl.federation.PartyContext`; :func:`plain_fit` is the same algorithm in
plaintext (the tests' reference).
"""

from ._core import LRConfig, expand_loss, plain_fit
from ._engine import AdditiveEngine, CKKSEngine
from ._estimator import HeteroLinearRegression, HeteroLogisticRegression
from ._roles import ActiveParty, Arbiter, PassiveParty

__all__ = [
    "ActiveParty",
    "AdditiveEngine",
    "Arbiter",
    "CKKSEngine",
    "HeteroLinearRegression",
    "HeteroLogisticRegression",
    "LRConfig",
    "PassiveParty",
    "expand_loss",
    "plain_fit",
]
