"""``hefl audit verify LOG`` and ``hefl tee measure JOB``."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` and ``tee`` sub-commands."""
    a = subparsers.add_parser("audit", help="check a TEE aggregator's audit log",
                              description="Audit logs of the TEE aggregator (hefl.tee).")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION")
    v = asub.add_parser(
        "verify", help="check the hash chain and signatures of an audit log and show its entries",
        description="Check every entry's hash, its link to the previous entry, its sequence number "
        "and its signature by the log key recorded in the first entry; fail (exit 1) naming the "
        "first broken entry when an entry was edited, removed, inserted or reordered, or when "
        "the log lacks its closing entry.")
    v.add_argument("log", metavar="LOG", help="the audit log (JSON lines)")
    v.add_argument("--heads", action="append", default=[], metavar="FILE",
                   help="a party's tee_heads.json: every head it received must match the log (repeatable)")
    v.add_argument("--log-key", metavar="HEX",
                   help="the log key the aggregator's quote attested (default: the claims.log_key of "
                        "the --heads files); without one the signatures only show that the log "
                        "agrees with the key it names itself")
    v.add_argument("--allow-open", action="store_true",
                   help="accept a log without its closing entry (a run still going or killed)")
    v.add_argument("-q", "--quiet", action="store_true", help="print only the verdict")
    v.set_defaults(func=_verify)
    a.set_defaults(func=lambda args: (a.print_help(), 2)[1])

    t = subparsers.add_parser("tee", help="TEE aggregator tools",
                              description="Tools of the TEE aggregator (hefl.tee).")
    tsub = t.add_subparsers(dest="tee_command", metavar="ACTION")
    m = tsub.add_parser("measure", help="print the code measurement an aggregator of this job reports",
                        description="The measurement (sha256 of the aggregator's code and the job's "
                        "aggregator configuration) that data parties put in tee.allowed_measurements.")
    m.add_argument("job", metavar="JOB.yaml")
    m.set_defaults(func=_measure)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])


def _verify(args: argparse.Namespace) -> int:
    from .chain import verify_log

    heads: list[dict] = []
    keys: set[str] = {args.log_key} if args.log_key else set()
    for f in args.heads:
        try:
            with open(f, encoding="utf-8") as fh:
                doc = json.load(fh)
            got = list(doc["heads"] if isinstance(doc, dict) else doc)
            if not all(isinstance(h, dict) for h in got):
                raise ValueError("'heads' must be a list of {seq, hash} objects")
            claims = doc.get("claims") if isinstance(doc, dict) else None
            if isinstance(claims, dict) and isinstance(claims.get("log_key"), str) and not args.log_key:
                keys.add(claims["log_key"])
            heads += got
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"cannot read heads from {f}: {exc}", file=sys.stderr)
            return 2
    if len(keys) > 1:
        print(f"FAILED: {args.log}: the heads files attest different log keys", file=sys.stderr)
        return 1
    key = next(iter(keys), None)
    res = verify_log(args.log, heads=heads, require_close=not args.allow_open, log_key=key)
    if not args.quiet:
        print(f"{'seq':>5}  {'time':<27} {'who':<14} {'op':<18} {'dir':<4} {'outcome':<8} detail")
        for e in res.entries:
            detail = ", ".join(f"{k}={str(d)[7:19] if str(d).startswith('sha256:') else str(d)[:24]}"
                               for k, d in {**e["inputs"], **e["outputs"]}.items())
            if e["note"]:
                detail = (detail + "; " if detail else "") + e["note"]
            print(f"{e['seq']:>5}  {e['time']:<27} {e['who'][:14]:<14} {e['op']:<18} {e['dir']:<4} "
                  f"{e['outcome']:<8} {detail[:120]}")
    if res.ok:
        print(f"OK: {len(res.entries)} entries, chain and signatures verify"
              f"{'' if res.closed else ' (log not closed)'}; head {res.head['hash']}"
              + (f"; {len(heads)} received head(s) match" if heads else "")
              + ("; signed by the attested log key" if key else
                 "; note: no attested log key given (--heads or --log-key), so this shows only "
                 "that the log agrees with the key it names"))
        return 0
    print(f"FAILED: {args.log}: {res.error}")
    return 1


def _measure(args: argparse.Namespace) -> int:
    from hefl.jobs import load_job

    from ._jobs import job_measurement

    job = load_job(args.job, check_files=False)
    print(job_measurement(job))
    return 0
