"""The ``hefl`` command.

Sub-commands live next to the code they drive; each module listed in ``_COMMAND_MODULES``
exposes ``register(subparsers)`` which adds its parser(s) and sets ``func`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each sub-command and the module that registers it. A command line that names one loads
# only that module: `hefl gpu warmup` on a GPU host does not import the job runner's
# pydantic or PSI's cryptography, and starts faster. `hefl --help` loads them all.
_COMMANDS = {
    "run": "hefl.jobs.cli",
    "validate": "hefl.jobs.cli",
    "keygen": "hefl.transport.cli",
    "psi": "hefl.psi.cli",
    "audit": "hefl.tee.cli",
    "tee": "hefl.tee.cli",
    "gpu": "hefl.gpu.cli",
    "bench": "hefl.bench",
}
_COMMAND_MODULES = list(dict.fromkeys(_COMMANDS.values()))


def _modules_for(argv: list[str]) -> list[str]:
    """The modules to load for this command line: the named command's, else all of them."""
    for word in argv:
        if word == "--":
            break
        if not word.startswith("-"):  # hefl's own options (-v, -h) take no value
            module = _COMMANDS.get(word)
            return [module] if module else _COMMAND_MODULES
    return _COMMAND_MODULES


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``hefl`` parser; with ``argv``, only the part that command line needs."""
    parser = argparse.ArgumentParser(
        prog="hefl",
        description="Homomorphic-encryption-first vertical federated learning.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv) if argv is not None else _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or (exc.name and name.startswith(exc.name + ".")):
                continue  # that part of hefl is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
