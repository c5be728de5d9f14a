"""Private set intersection (PSI): find the IDs all parties share, reveal nothing else.

Before vertical training the parties must line up their rows: find the customers they
have in common without showing each other the rest. ``hefl.psi`` does this with
ECDH-PSI over Curve25519 (X25519), for two or more parties.

Usage
-----
Every party runs the same call with its own IDs, over a party context::

    from hefl import psi

    rows = psi.intersect(ctx, ids)             # positions into `ids`, common order
    shared = [ids[i] for i in rows]            # identical list on every party

    aligned = psi.align_dataframe(ctx, frame, "customer_id")   # pandas helper

Locally, for trying it out (one process per party over loopback ZeroMQ)::

    from hefl.federation import run_local

    out = run_local({
        "bank":   lambda ctx: psi.intersect(ctx, bank_ids),
        "retail": lambda ctx: psi.intersect(ctx, retail_ids),
        "telco":  lambda ctx: psi.intersect(ctx, telco_ids),   # any number of parties
    })

From the command line, each party on its own machine::

    hefl psi --party bank --csv bank.csv --id-column customer_id \\
        --listen tcp://0.0.0.0:7001 --peer retail=tcp://retail.example:7001 \\
        --out bank_aligned.csv

The result lists the shared IDs in one order that is the same on every party (sorted by
their fully blinded value, which looks random), so row ``r`` of every party's output is
the same person. Options: ``duplicates="drop"`` keeps the first of repeated IDs (default:
:class:`~hefl.errors.DataError`); ``n_jobs`` spreads the curve work over processes;
``batch_size`` bounds the memory in flight; ``timeout`` bounds every wait.

IDs
---
Strings, matched exactly (UTF-8 bytes; no case folding or Unicode normalisation —
normalise beforehand if your parties spell IDs differently). Integers become their
decimal string (``7`` and ``"7"`` are the same ID). Floats, booleans and missing values
are refused. Empty sets and empty intersections give empty results.

How it works
------------
Each party draws a fresh secret scalar ``k`` for every run and hashes each ID to a
Curve25519 point, ``H(id) = SHA-256(domain || id)`` as an X25519 u-coordinate.
Blinding is X25519 scalar multiplication, which commutes: ``a·(b·H(x)) = b·(a·H(x))``.
Each party shuffles and blinds its own set and passes it round a ring of the parties;
every party multiplies in its own key, so after a full turn each value carries every
key — equal IDs give equal values, and nobody can undo the blinding. One party, the
*leader* (first name in sorted order unless ``leader=`` says otherwise), matches the
fully blinded sets and tells each party which of its positions matched, in the order of
the sorted fully blinded values. All work streams in batches; each ID costs one X25519
multiplication per party. Peer-sent points are checked (shape, canonical encoding,
low-order points) and bad ones raise :class:`~hefl.errors.ProtocolError`.

What is revealed (security)
---------------------------
Semi-honest parties, no collusion, DDH hard on Curve25519 and its twist:

* **Two parties**: each learns the intersection (as rows of its own data) and the size
  of the other's set. Nothing else.
* **Three or more**: every party learns the intersection of *all* sets and every set's
  size. The leader additionally learns the *size* of the intersection of every subset of
  the parties (e.g. how many IDs bank and telco share, even if retail lacks them) — but
  not which IDs: the fully blinded sets it matches are shuffled, its own one included.
  No party can tell which fully blinded value belongs to which of its own IDs, apart
  from the shared ones it is told about.
* Order of the input is hidden: each party shuffles before sending.
* Collusion breaks this: the leader together with the party before it in the ring can
  tell which of the leader's IDs each other party holds; parties that pool their keys
  can test guessed IDs against the others' sets.
* Secrets are fresh per run and never leave the party (worker processes are local).

Performance
-----------
The cost is one X25519 multiplication per ID per party on top of a hash; with
``n_jobs=1`` the work runs in the party's own process. ``benchmarks/psi_bench.py``
measures the wall time against the raw X25519 rate of the machine.
"""

from __future__ import annotations

from hefl.psi._api import align_dataframe, intersect

__all__ = ["align_dataframe", "intersect"]
