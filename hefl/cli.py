"""The ``hefl`` command.

Sub-commands live next to the code they drive; each module listed in ``_COMMAND_MODULES``
exposes ``register(subparsers)`` which adds its parser(s) and sets ``func`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

_COMMAND_MODULES = [
    "hefl.jobs.cli",
    "hefl.transport.cli",
    "hefl.psi.cli",
    "hefl.tee.cli",
    "hefl.gpu.cli",
    "hefl.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hefl",
        description="Homomorphic-encryption-first vertical federated learning.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or (exc.name and name.startswith(exc.name + ".")):
                continue  # that part of hefl is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format=fmt,
    )
    if args.verbose < 2:  # tracebacks of logged errors only with -vv (they are in party.log)
        from hefl.jobs._progress import BriefFormatter

        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
                h.setFormatter(BriefFormatter(fmt))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
