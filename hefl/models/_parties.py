"""The ``parties=`` column spec shared by the scikit-learn façades.

``parties`` maps each party's name to the columns it holds (indices, or names when ``X``
is a DataFrame).  The first party is the *active* one: it holds the label (and, for the
Paillier protocols, the secret key).  Without a spec, the columns are split in two
halves between ``"guest"`` (active) and ``"host"`` (passive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hefl.errors import ConfigError

__all__ = ["MAX_FEATURES", "PartySpec", "resolve_parties", "TRANSPORTS"]

#: Most features one party may announce to its peers in a protocol: the count sizes what
#: the others allocate and decrypt for it.
MAX_FEATURES = 1 << 20

#: how a façade runs the parties: separate processes over loopback ZeroMQ (like a real
#: deployment) or threads over an in-memory channel (fast, for tests)
TRANSPORTS = ("processes", "threads")


@dataclass(frozen=True)
class PartySpec:
    """Resolved column assignment: ``names[0]`` is active; ``columns[name]`` are indices."""

    names: tuple[str, ...]
    columns: dict[str, np.ndarray]

    @property
    def active(self) -> str:
        return self.names[0]

    @property
    def passive(self) -> tuple[str, ...]:
        return self.names[1:]

    def block(self, X: np.ndarray, name: str) -> np.ndarray:
        return np.ascontiguousarray(X[:, self.columns[name]])


def resolve_parties(parties: Mapping[str, Sequence] | None, n_features: int,
                    feature_names: Sequence[str] | None = None) -> PartySpec:
    """Validate a ``parties=`` spec against the data's columns.

    Raises
    ------
    ConfigError
        Unknown column names, indices out of range, a column given to two parties or to
        none, fewer than two parties, or a non-string party name.
    """
    if parties is None:
        half = (n_features + 1) // 2
        return PartySpec(("guest", "host"), {"guest": np.arange(half), "host": np.arange(half, n_features)})
    if not isinstance(parties, Mapping) or len(parties) < 2:
        raise ConfigError("parties must map at least two party names to their columns, "
                          "e.g. {'guest': [0, 1], 'host': [2, 3]}")
    names = tuple(parties)
    lookup = {str(c): i for i, c in enumerate(feature_names)} if feature_names is not None else {}
    columns: dict[str, np.ndarray] = {}
    seen: dict[int, str] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"party names must be non-empty strings, got {name!r}")
        idx = []
        for c in parties[name]:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                i = int(c)
                if not 0 <= i < n_features:
                    raise ConfigError(f"party {name!r}: column index {i} out of range for {n_features} features")
            elif isinstance(c, str):
                if c not in lookup:
                    raise ConfigError(f"party {name!r}: unknown column {c!r}")
                i = lookup[c]
            else:
                raise ConfigError(f"party {name!r}: columns must be indices or names, got {c!r}")
            if i in seen:
                raise ConfigError(f"column {c!r} given to both {seen[i]!r} and {name!r}")
            seen[i] = name
            idx.append(i)
        columns[name] = np.asarray(idx, dtype=np.int64)
    unassigned = [i for i in range(n_features) if i not in seen]
    if unassigned:  # a column no party holds would be silently left out of the model
        shown = [str(feature_names[i]) if feature_names is not None else i for i in unassigned]
        raise ConfigError(f"column(s) {shown[:20]}{' …' if len(shown) > 20 else ''} belong to no party: "
                          "give every column of X to one party (drop unused columns from X)")
    return PartySpec(names, columns)
