"""``hefl keygen``: write a CurveZMQ key pair for one party."""

from __future__ import annotations

import argparse
import sys

from hefl.transport.curve import write_keypair

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``keygen`` sub-command."""
    p = subparsers.add_parser(
        "keygen",
        help="write a CurveZMQ key pair (NAME.key public, NAME.key_secret private)",
        description="Write a CurveZMQ key pair for one party: DIR/NAME.key (public; list it "
        "in the job for this party) and DIR/NAME.key_secret (mode 0600; keep it on this host).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    p.add_argument("--name", default="party", help="file stem (default: party)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    try:
        pub_path, sec_path = write_keypair(args.out, args.name, force=args.force)
    except (FileExistsError, OSError, ValueError) as exc:
        print(f"hefl keygen: {exc}", file=sys.stderr)
        return 1
    public = pub_path.read_text().split('public-key = "', 1)[1].split('"', 1)[0]
    print(f"public key  {public}")
    print(f"wrote       {pub_path} (public)")
    print(f"            {sec_path} (secret, mode 0600)")
    return 0
