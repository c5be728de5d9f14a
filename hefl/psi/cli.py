"""``hefl psi``: one party's side of a PSI run, from a CSV to an aligned CSV.

Every party runs the command at the same time with its own data::

    # on the bank's host
    hefl psi --party bank --csv bank.csv --id-column customer_id \\
        --listen tcp://0.0.0.0:7001 --peer shop=tcp://shop.example:7002 --out bank_aligned.csv
    # on the shop's host
    hefl psi --party shop --csv shop.csv --id-column cid \\
        --listen tcp://0.0.0.0:7002 --peer bank=tcp://bank.example:7001 --out shop_aligned.csv

Each gets its own rows of the shared IDs, in the same order on every party. Every
column is read and written as text (leading zeros, long numbers and values such as ``NA``
are kept as written).
With ``--curve-secret-key`` and one ``--curve-public-key NAME=FILE`` per peer the link is
CurveZMQ-encrypted and only those peers are accepted (keys from ``hefl keygen``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from hefl.errors import HeflError

__all__ = ["register"]

log = logging.getLogger("hefl.psi")


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``psi`` sub-command."""
    p = subparsers.add_parser(
        "psi",
        help="private set intersection: align this party's CSV with its peers'",
        description="Run one party of an ECDH private set intersection. Every party runs this "
        "at the same time; each writes its rows of the IDs all parties share, in one order "
        "that is the same on every party. Each party learns the intersection and the set sizes; "
        "with three or more parties the leader also learns how many IDs each group of parties "
        "shares.",
    )
    p.add_argument("--party", required=True, help="this party's name")
    p.add_argument("--csv", required=True, metavar="FILE", help="this party's data (CSV)")
    p.add_argument("--id-column", required=True, metavar="COL", help="column holding the IDs")
    p.add_argument("--listen", required=True, metavar="ADDR",
                   help="address to bind, e.g. tcp://0.0.0.0:7001")
    p.add_argument("--peer", action="append", type=_pair, default=[], metavar="NAME=ADDR",
                   help="a peer and its address, e.g. shop=tcp://10.0.0.2:7002 (repeat per peer)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the aligned CSV")
    p.add_argument("--sep", default=",", help="CSV field separator, one character (default ','; "
                   "a tab: --sep $'\\t')")
    p.add_argument("--duplicates", choices=("raise", "drop"), default="raise",
                   help="repeated IDs: fail (default) or keep the first occurrence")
    p.add_argument("--leader", default=None,
                   help="party that matches the blinded sets (default: first name in sorted order)")
    p.add_argument("--n-jobs", type=int, default=1,
                   help="processes for the curve work (-1: one per core; default 1)")
    p.add_argument("--batch-size", type=int, default=4096, help="IDs per message (default 4096)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for any one message (default 300)")
    p.add_argument("--connect-timeout", type=float, default=300.0,
                   help="seconds to wait for all peers to come up (default 300)")
    p.add_argument("--curve-secret-key", default=None, metavar="FILE",
                   help="this party's CurveZMQ secret key (enables encryption)")
    p.add_argument("--curve-public-key", action="append", type=_pair, default=[],
                   metavar="NAME=FILE", help="a peer's CurveZMQ public key (repeat per peer)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return _psi(args)
    except (HeflError, OSError, ValueError) as exc:
        print(f"hefl psi: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _psi(args: argparse.Namespace) -> int:
    import pandas as pd

    from hefl.errors import ConfigError, DataError
    from hefl.federation import PartyContext
    from hefl.psi import intersect
    from hefl.psi._ecdh import MAX_BATCH
    from hefl.psi._engine import resolve_n_jobs
    from hefl.psi._ids import prepare_ids

    peers = dict(args.peer)
    if len(peers) != len(args.peer):
        raise ConfigError("a peer is named twice in --peer")
    if not peers:
        raise ConfigError("name at least one --peer NAME=ADDR")
    if args.party in peers:
        raise ConfigError(f"--peer names this party ({args.party!r}) itself")
    keys = dict(args.curve_public_key)
    if bool(args.curve_secret_key) != bool(keys):
        raise ConfigError("--curve-secret-key and --curve-public-key go together (one per peer)")
    if keys and set(keys) != set(peers):
        raise ConfigError(f"--curve-public-key needed for exactly the peers {sorted(peers)}, got {sorted(keys)}")

    # what can be checked here is, before any peer waits
    if len(args.sep) != 1:
        raise ConfigError(f"--sep must be one character, got {args.sep!r}")
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise ConfigError(f"--batch-size must be in [1, {MAX_BATCH}], got {args.batch_size}")
    resolve_n_jobs(args.n_jobs)
    if args.leader is not None and args.leader != args.party and args.leader not in peers:
        raise ConfigError(f"--leader {args.leader!r} is neither this party nor a --peer")
    out_dir = Path(args.out).resolve().parent
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {args.out}: {out_dir} is not a directory")

    # Every column as written: no NaN guessing ("NA", "null" are values too), no number
    # parsing (leading zeros, 17-digit account numbers): this command only selects rows.
    frame = pd.read_csv(args.csv, sep=args.sep, dtype=str, keep_default_na=False, na_values=[])
    if args.id_column not in frame.columns:
        raise DataError(f"ID column {args.id_column!r} not in {args.csv} (columns: {list(frame.columns)[:20]})")
    raw = frame[args.id_column]
    if isinstance(raw, pd.DataFrame):
        raise DataError(f"{args.csv} has {raw.shape[1]} columns named {args.id_column!r}")
    empty = (raw == "").to_numpy().nonzero()[0]
    if empty.size:
        raise DataError(f"empty ID in {args.csv} at data row {int(empty[0]) + 1} "
                        f"({empty.size} empty in all)")
    prepare_ids(raw.tolist(), args.duplicates)

    addresses = {args.party: args.listen, **peers}
    t0 = time.perf_counter()
    with PartyContext.connect(
        args.party, addresses,
        curve_secret_key=args.curve_secret_key, curve_public_keys=keys or None,
        recv_timeout=args.timeout, connect_timeout=args.connect_timeout,
    ) as ctx:
        rows = intersect(
            ctx, raw.tolist(), duplicates=args.duplicates, leader=args.leader,
            n_jobs=args.n_jobs, batch_size=args.batch_size, timeout=args.timeout,
        )
    aligned = frame.iloc[rows].reset_index(drop=True)
    from hefl._atomic import atomic_path

    with atomic_path(args.out) as tmp:
        aligned.to_csv(tmp, sep=args.sep, index=False)
    print(f"hefl psi: {args.party}: {len(frame)} rows, {len(aligned)} shared with "
          f"{', '.join(sorted(peers))}; wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0
