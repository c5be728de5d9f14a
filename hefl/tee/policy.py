"""Data-use policies: which operations the TEE aggregator may perform on a party's data.

A party states its policy in the job (``tee.policies.<party>``) and sends it to the
aggregator after verifying the aggregator's quote::

    tee:
      policies:
        guest: {allow: [lr.setup, lr.encrypt_zero, lr.open_gradient, lr.loss], max_rounds: 5}

Every message the aggregator receives from or sends to a party is classified by its tag
into an operation (:func:`classify`); an operation the party did not allow, a round past
``max_rounds``, or a message no operation explains is refused with a
:class:`~hefl.errors.PolicyError` that is also sent to the data parties.

Operations (:data:`OPERATIONS`):

``lr.setup``         receive the job's shape (rows, columns per party, batch seed); publish the HE public key
``lr.encrypt_zero``  send fresh encryptions of zero (randomness for the party's ciphertexts)
``lr.open_gradient`` decrypt the party's masked gradient and masked loss piece, return it
``lr.loss``          sum the opened loss pieces into the batch loss; announce early stopping
``secure_sum``       add the parties' pairwise-masked vectors and return the sum

A *round* is one training epoch of one problem (``p<c>/e<e>``) or one ``secure_sum`` call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hefl.errors import ConfigError, ProtocolError

__all__ = ["CONTROL_OPS", "OPERATIONS", "Policy", "classify"]

OPERATIONS: dict[str, str] = {
    "lr.setup": "receive the job's shape and publish the HE public key",
    "lr.encrypt_zero": "send fresh encryptions of zero",
    "lr.open_gradient": "decrypt the party's masked gradient and masked loss piece",
    "lr.loss": "sum the opened loss pieces into the batch loss; decide early stopping",
    "secure_sum": "sum the parties' pairwise-masked vectors",
}
#: The aggregator's own protocol (attestation, policies, log heads): always allowed, audited.
CONTROL_OPS = ("tee.attest", "tee.policy", "tee.control")

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?:^|/)tee/(?:nonce|quote)$"), "tee.attest"),
    (re.compile(r"(?:^|/)tee/(?:policy|ready)$"), "tee.policy"),
    (re.compile(r"(?:^|/)tee/(?:head/[^/]+|refused|final|drain)$"), "tee.control"),
    (re.compile(r"(?:^|/)tee/sum/(?P<r>[^/]+)/(?:in|out)$"), "secure_sum"),
    (re.compile(r"(?:^|/)(?:setup|pubkey)$"), "lr.setup"),
    (re.compile(r"(?:^|/)(?P<r>p\d+/e\d+)/b\d+/z$"), "lr.encrypt_zero"),
    (re.compile(r"(?:^|/)(?P<r>p\d+/e\d+)/b\d+/(?:g|gd)$"), "lr.open_gradient"),
    (re.compile(r"(?:^|/)(?P<r>p\d+/e\d+)/stop$"), "lr.loss"),
]


def classify(tag: str) -> tuple[str, str | None]:
    """``(operation, round)`` of a full tag; ``("unknown", None)`` when nothing matches."""
    for rx, op in _RULES:
        m = rx.search(tag)
        if m:
            r = m.groupdict().get("r")
            return op, (f"sum:{r}" if op == "secure_sum" and r else r)
    return "unknown", None


@dataclass(frozen=True)
class Policy:
    """One party's data-use policy.

    Parameters
    ----------
    allow : iterable of str
        Operations (keys of :data:`OPERATIONS`) allowed on this party's data.
    max_rounds : int, optional
        Most rounds (epochs of one problem, or secure-sum calls) the party takes part in.
    """

    allow: frozenset[str]
    max_rounds: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.allow) - set(OPERATIONS))
        if unknown:
            raise ConfigError(f"unknown operation(s) {', '.join(map(repr, unknown))} in a data-use "
                              f"policy; known: {', '.join(OPERATIONS)}")
        if self.max_rounds is not None and (not isinstance(self.max_rounds, int)
                                            or isinstance(self.max_rounds, bool) or self.max_rounds < 0):
            raise ConfigError(f"max_rounds must be a non-negative integer, got {self.max_rounds!r}")

    @classmethod
    def of(cls, allow: Iterable[str], max_rounds: int | None = None) -> Policy:
        return cls(frozenset(allow), max_rounds)

    def to_wire(self) -> dict:
        return {"allow": sorted(self.allow), "max_rounds": self.max_rounds}

    @classmethod
    def from_wire(cls, obj: Any, *, peer: str | None = None, tag: str | None = None) -> Policy:
        if not (isinstance(obj, Mapping) and set(obj) == {"allow", "max_rounds"}
                and isinstance(obj["allow"], list) and all(isinstance(a, str) for a in obj["allow"])):
            raise ProtocolError(f"malformed policy {obj!r}", peer=peer, tag=tag)
        try:
            return cls(frozenset(obj["allow"]), obj["max_rounds"])
        except ConfigError as exc:
            raise ProtocolError(str(exc), peer=peer, tag=tag) from None
