"""``hefl run`` and ``hefl validate``: the job runner's commands.

::

    hefl run configs/quickstart.yaml                       # every party here, one process each
    hefl run job.yaml --party guest                        # this host's party of a multi-host job
    hefl validate job.yaml [--party NAME]                  # check everything, start nothing
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` and ``validate`` sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "run", formatter_class=fmt,
        help="run a job: PSI, training, evaluation, prediction (all parties here, or one with --party)",
        description=_wrap("Run a job file. Without --party every party runs on this machine in its own process "
        "over loopback ZeroMQ, with progress bars and a summary table at the end. With --party NAME only "
        "that party runs, connected to the other parties at the addresses in the job (each host runs its "
        "own party; CurveZMQ encryption when the job lists keys)."),
        epilog="examples:\n  hefl run configs/quickstart.yaml\n"
               "  hefl run configs/credit_secureboost.yaml --resume   # after a crash: from the last tree\n"
               "  hefl run configs/two_hosts.yaml --party guest     # on the guest's host\n"
               "  hefl run configs/two_hosts.yaml --party host      # on the host's host\n\n"
               "exit status: 0 done, 1 a party failed (its error is printed), 2 the job file has problems",
    )
    p.add_argument("job", metavar="JOB.yaml", help="the job file")
    p.add_argument("--party", metavar="NAME", help="run only this party (multi-host deployment)")
    p.add_argument("--output", metavar="DIR", help="write the outputs here (overrides the job's output key)")
    p.add_argument("--curve-secret-key", metavar="FILE",
                   help="this party's CurveZMQ secret key (overrides curve_secret_key; with --party)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped or killed run: training restarts from the newest tree/epoch "
                        "checkpoint every party holds (the steps before training run again); with --party, "
                        "give it on every host")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (the summary is still printed)")
    p.set_defaults(func=_run)

    v = subparsers.add_parser(
        "validate", formatter_class=fmt,
        help="check a job file (keys, parties, steps, data files, key files) without running it",
        description=_wrap("Check a job file the way 'hefl run' does before it starts anything: unknown keys, "
        "types and ranges, one active party, labels only on the active party, step order, addresses, "
        "data files and their columns, the label against the task. With --party NAME, check it as that "
        "party's host would (only its own files; addresses and CURVE keys needed)."),
        epilog="exit status: 0 valid, 2 problems (each printed as FILE:LINE: yaml.path: message)",
    )
    v.add_argument("job", metavar="JOB.yaml", help="the job file")
    v.add_argument("--party", metavar="NAME", help="check as this party's host would")
    v.add_argument("--no-files", action="store_true", help="check the file itself only, not the data it names")
    v.set_defaults(func=_validate)


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=88)


def _load(args: argparse.Namespace, check_files: bool = True):
    from .config import load_job

    return load_job(args.job, party=args.party, check_files=check_files,
                    output=getattr(args, "output", None),
                    curve_secret_key=getattr(args, "curve_secret_key", None) if args.party else None)


def _validate(args: argparse.Namespace) -> int:
    from hefl.errors import ConfigError

    from ._models import unavailable_reason

    try:
        job = _load(args, check_files=not args.no_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    cfg = job.config
    print(f"{args.job}: OK" + (f" (as party {args.party!r})" if args.party else ""))
    print(f"  job       {job.name} (seed {cfg.seed})" + (f" — {cfg.description}" if cfg.description else ""))
    for name, p in cfg.parties.items():
        data = ""
        if p.data is not None:
            data = os.path.relpath(job.resolve(p.data.path))
            if p.data.label_column:
                data += f" (label {p.data.label_column!r})"
        where = f" at {p.address}" if p.address else ""
        keys = " [CURVE]" if p.curve_public_key else ""
        print(f"  party     {name:<10} {p.role:<8}{where}{keys}  {data}")
    steps = []
    for s in cfg.steps:
        if s.kind == "train":
            steps.append(f"train({s.train.model}, task {job.task or s.train.task})")
        else:
            steps.append(s.kind)
    print(f"  steps     {' -> '.join(steps)}")
    he = cfg.he
    print(f"  he        {he.scheme}" + (f"-{he.key_size}" if he.scheme in ('paillier', 'ou') else "")
          + f", backend {he.backend}" + (" (insecure allowed)" if he.allow_insecure else ""))
    print(f"  output    {os.path.relpath(job.output)}")
    warnings = list(job.warnings)
    why = unavailable_reason(job.train.model) if job.train else None
    if why:
        warnings.append(f"{why}: 'hefl run' will refuse this job until it is")
    for w in warnings:
        print(f"  note      {w}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from hefl.errors import ConfigError

    from .runner import PartyFailed, format_summary, run_job, run_one_party

    try:
        job = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.curve_secret_key and not args.party:
        print("hefl run: --curve-secret-key goes with --party", file=sys.stderr)
        return 2
    for w in job.warnings:
        print(f"note: {w}", file=sys.stderr)
    try:
        if args.party:
            res = run_one_party(job, args.party, curve_secret_key=args.curve_secret_key, progress=not args.quiet,
                                resume=args.resume)
        else:
            res = run_job(job, progress=not args.quiet, resume=args.resume)
    except ConfigError as exc:  # refused before any process started (e.g. a model not available)
        print(f"hefl run: {exc}", file=sys.stderr)
        return 2
    except PartyFailed as exc:
        print(f"hefl run: {exc}", file=sys.stderr)
        if exc.party and exc.party in job.parties:
            log = job.output / exc.party / "party.log"
            if log.exists():
                print(f"hefl run: {exc.party}'s log: {os.path.relpath(log)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hefl run: interrupted; every party stopped", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. the output directory cannot be created
        print(f"hefl run: {exc}", file=sys.stderr)
        return 1
    sys.stderr.flush()
    print(format_summary(res))
    return 0
