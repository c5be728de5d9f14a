"""TEE aggregator: an attested third party with data-use policies and a tamper-evident audit log.

* :mod:`hefl.tee.attestation` -- quotes binding a code measurement, the aggregator's
  CURVE key and a verifier nonce; the pluggable :class:`AttestationProvider` and the
  development-only :class:`SimulatedProvider` (software key, **no hardware protection**).
* :mod:`hefl.tee.policy` -- per-party data-use policies (allowed operations, rounds).
* :mod:`hefl.tee.chain` -- hash-chained, signed JSON-lines audit log and its verifier
  (``hefl audit verify LOG``).
* :mod:`hefl.tee.aggregator` -- :class:`TeeAggregator` (hosts the hetero-LR arbiter role
  or a masked-sum aggregation) and :class:`TeeClient` (a data party's side).
"""

from .aggregator import (
    TeeAggregator,
    TeeClient,
    channel_public_key,
    decode_sum,
    masked_sum_share,
    pinned_peer_key,
    secure_sum_client,
)
from .attestation import (
    AttestationError,
    AttestationProvider,
    Quote,
    SimulatedProvider,
    measure,
    new_nonce,
    register_provider,
    verify_quote,
)
from .chain import AuditLog, AuditVerification, digest, verify_log
from .policy import OPERATIONS, Policy, classify

__all__ = [
    "OPERATIONS",
    "AttestationError",
    "AttestationProvider",
    "AuditLog",
    "AuditVerification",
    "Policy",
    "Quote",
    "SimulatedProvider",
    "TeeAggregator",
    "TeeClient",
    "channel_public_key",
    "classify",
    "decode_sum",
    "digest",
    "masked_sum_share",
    "measure",
    "new_nonce",
    "pinned_peer_key",
    "register_provider",
    "secure_sum_client",
    "verify_log",
    "verify_quote",
]
