"""SecureBoost: vertical federated gradient boosting, lossless against XGBoost.

* :class:`SecureBoostClassifier`, :class:`SecureBoostRegressor` — scikit-learn estimators
  that run the real protocol among simulated parties (``parties=`` column spec).
* :class:`ActiveParty`, :class:`PassiveParty` — the roles, for real deployments (driven
  by the job runner), talking only through a ``PartyContext``.
* :class:`PlainBooster` — the plaintext reference core (tested against XGBoost).
"""

from ._core import PlainBooster
from ._federated import ActiveParty, BoostParams, PassiveParty, predict_active, predict_passive
from .estimator import SecureBoostClassifier, SecureBoostRegressor, load_party_model, save_party_model

__all__ = [
    "SecureBoostClassifier", "SecureBoostRegressor", "ActiveParty", "PassiveParty", "BoostParams",
    "predict_active", "predict_passive", "PlainBooster", "save_party_model", "load_party_model",
]
