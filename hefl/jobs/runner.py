"""Running a job: every party on this machine (embedded), or one party of a multi-host job.

* :func:`run_job` — the embedded default of ``hefl run JOB.yaml``: each party in its own
  process on loopback ZeroMQ (:func:`hefl.federation.run_local`), progress on the
  launcher's terminal, a summary table at the end. The first party to fail stops the
  others and its error is raised, naming the party and the step.
* :func:`run_one_party` — ``hefl run JOB.yaml --party NAME``: this host's party only,
  connected to the others at the addresses in the job (CurveZMQ when keys are given).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from hefl.errors import ConfigError

from ._models import unavailable_reason
from ._party import party_logging, run_party
from ._progress import Display, PipeLogHandler, PipeReader, Reporter
from .config import Job

__all__ = ["JobResult", "PartyFailed", "failure_origin", "format_summary", "run_job", "run_one_party"]

log = logging.getLogger("hefl.jobs")


@dataclass
class JobResult:
    """What a run returns: each party's summary, the step times seen by the launcher."""

    job: Job
    parties: dict[str, dict]
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)


class PartyFailed(Exception):
    """A party of the job failed; ``party``, ``step`` and the original error as ``__cause__``.

    ``others`` says how each other party of an embedded run ended (party -> text, e.g.
    ``"PeerLostError: party process was killed by signal SIGKILL … (peer 'host', …)"``).
    """

    def __init__(self, party: str | None, step: str | None, error: BaseException):
        self.party = party
        self.step = step
        self.error = error
        self.others: dict[str, str] = dict(getattr(error, "hefl_others", None) or {})
        where = f"party {party!r}" if party else "a party"
        if step and step not in ("done",):
            where += f" failed in step {step!r}" if step != "load" else " failed reading its data"
        else:
            where += " failed"
        super().__init__(f"{where}: {type(error).__name__}: {error}")


def failure_origin(exc: BaseException) -> tuple[str | None, str | None]:
    """The party and step an error came from (attributes set by the party, or run_local's note)."""
    party = getattr(exc, "hefl_party", None)
    step = getattr(exc, "hefl_step", None)
    if party is None:
        for note in getattr(exc, "__notes__", []) or []:
            m = re.search(r"raised by party '([^']+)'", note)
            if m:
                party = m.group(1)
                break
    if party is None:
        party = getattr(exc, "peer", None)
    return party, step


def _check_runnable(job: Job) -> None:
    why = unavailable_reason(job.train.model)
    if why:
        raise ConfigError(why)


def _participants(job: Job, only: str | None = None) -> dict[str, list[str]]:
    names = [only] if only else list(job.parties)
    return {k: names for k in job.step_kinds}


def _embedded_party(job: Job, name: str, conn: Any, resume: bool, ctx: Any) -> dict:
    """A party process of an embedded run: progress and console log lines go to the launcher."""
    root = logging.getLogger()
    level = root.level
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
            level = max(level, h.level)
            root.removeHandler(h)
    root.addHandler(PipeLogHandler(name, conn.send, level))
    if not root.handlers[:-1] and level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    rep = Reporter(name, conn.send)
    return run_party(job, name, ctx, rep, resume=resume)


def run_job(job: Job, *, progress: bool = True, stream: TextIO | None = None, resume: bool = False) -> JobResult:
    """Run every party of ``job`` on this machine, each in its own process.

    Parameters
    ----------
    job : Job
        From :func:`hefl.jobs.load_job`.
    progress : bool
        Show progress bars (terminal) or step lines (otherwise) on ``stream``.
    stream : file, optional
        Default ``sys.stderr``.
    resume : bool
        Continue training from the newest checkpoint every party holds (``hefl run
        --resume``; see :mod:`hefl.checkpoint`); the steps before training run again.

    Raises
    ------
    PartyFailed
        The first party that failed, with its error as ``__cause__``; every party
        process is stopped before this returns.
    """
    from hefl.federation import run_local

    _check_runnable(job)
    job.output.mkdir(parents=True, exist_ok=True)
    _preload(job)
    t = job.config.timeouts
    display = Display(_participants(job), stream=stream, enabled=progress)
    readers, writers = [], {}
    for name in job.parties:
        r, w = multiprocessing.Pipe(duplex=False)
        readers.append(r)
        writers[name] = w
    fns = {name: functools.partial(_embedded_party, job, name, writers[name], resume) for name in job.parties}
    curve = True if job.curve_enabled() else None
    if job.config.tee is not None:
        from hefl.tee._jobs import prepare_embedded

        prepare_embedded(job)  # simulated root made here, before the parties fork
        curve = True  # the quote binds the aggregator's CURVE key: the links must use it
    reader = PipeReader(readers, display).start()
    t0 = time.perf_counter()
    try:
        results = run_local(fns, timeout=t.job, recv_timeout=t.recv, curve_keys=curve,
                            heartbeat_timeout=t.heartbeat)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # Ctrl-C, SIGTERM (see run_local)
            raise
        party, step = failure_origin(exc)
        raise PartyFailed(party, step, exc) from exc
    finally:
        reader.stop()
        display.close()
        for c in [*readers, *writers.values()]:
            c.close()
    return JobResult(job, results, time.perf_counter() - t0, dict(display.seconds))


def _preload(job: Job) -> None:
    """Import what every party needs once, before the party processes fork (they share it)."""
    import importlib

    names = ["sklearn.metrics", "sklearn.model_selection", "sklearn.preprocessing", "hefl.psi"]
    names.append("hefl.models.secureboost" if job.train.model == "secureboost" else "hefl.models.hetero_lr")
    for n in names:
        try:
            importlib.import_module(n)
        except ImportError:  # the party will report it
            pass
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot
    except ImportError:
        pass


def run_one_party(job: Job, name: str, *, curve_secret_key: str | None = None, progress: bool = True,
                  stream: TextIO | None = None, resume: bool = False) -> JobResult:
    """Run party ``name`` of ``job`` here, connected to the other hosts at their addresses.

    Raises
    ------
    PartyFailed
        This party failed (or lost a peer): the error as ``__cause__``.
    """
    from hefl.federation import PartyContext

    _check_runnable(job)
    cfg = job.config
    me = cfg.parties[name]
    secret = public = None
    if job.curve_enabled():
        secret = curve_secret_key or (str(job.resolve(me.curve_secret_key)) if me.curve_secret_key else None)
        if not secret:
            raise ConfigError(f"party {name!r} has no curve_secret_key (or pass --curve-secret-key)")
        public = {n: str(job.resolve(p.curve_public_key)) for n, p in cfg.parties.items()
                  if n != name and p.curve_public_key}
    (job.output / name).mkdir(parents=True, exist_ok=True)
    out = stream or sys.stderr
    peers = [n for n in cfg.parties if n != name]
    if progress:
        print(f"{name}: listening on {me.bind or me.address}; waiting for "
              f"{', '.join(f'{p} at {cfg.parties[p].address}' for p in peers)} "
              f"(up to {cfg.timeouts.connect:.0f} s){'; CurveZMQ on' if secret else ''}", file=out, flush=True)
    t0 = time.perf_counter()
    display = Display(_participants(job, name), stream=out, enabled=progress)
    with party_logging(job.output / name / "party.log", name, append=resume):
        log.info("job %s (%s): party %s connecting to %s; CurveZMQ %s", job.name, job.path, name,
                 ", ".join(f"{p} at {cfg.parties[p].address}" for p in peers), "on" if secret else "off")
        try:
            ctx = PartyContext.connect(name, job.addresses(), bind=me.bind, curve_secret_key=secret,
                                       curve_public_keys=public, recv_timeout=cfg.timeouts.recv,
                                       connect_timeout=cfg.timeouts.connect,
                                       heartbeat_timeout=cfg.timeouts.heartbeat)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.error("could not connect: %s: %s", type(exc).__name__, exc)
            raise PartyFailed(name, "connect", exc) from exc
        log.info("all peers are up")
        ok = False
        try:
            result = run_party(job, name, ctx, Reporter(name, display.handle), log_file=False, resume=resume)
            ok = True
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise PartyFailed(name, getattr(exc, "hefl_step", None), exc) from exc
        finally:
            display.close()
            if ok:
                ctx.close()
            else:
                try:
                    ctx.channel.close(linger=0)  # type: ignore[call-arg]  # ZmqChannel: drop queued messages
                except TypeError:
                    ctx.close()
    return JobResult(job, {name: result}, time.perf_counter() - t0, dict(display.seconds))


# ----------------------------------------------------------------------------- summary


def _rel(path: str) -> str:
    import os

    try:
        r = os.path.relpath(path)
    except ValueError:
        return path
    return path if r.startswith("../..") else r


def format_summary(res: JobResult) -> str:
    """The table printed at the end of ``hefl run``."""
    job = res.job
    lines = [f"hefl run {job.name}: done in {res.seconds:.1f} s — outputs in {_rel(str(job.output))}", ""]
    # steps
    lines.append(f"  {'step':<10}{'time':>8}  result")
    for kind in job.step_kinds:
        secs = res.step_seconds.get(kind)
        if secs is None:
            secs = max((p["steps"].get(kind, {}).get("seconds", 0.0) for p in res.parties.values()), default=0.0)
        texts = [(n, p["role"], p["steps"].get(kind, {}).get("summary", "")) for n, p in res.parties.items()]
        texts.sort(key=lambda t: t[1] != "active")
        text = "; ".join(t if role == "active" else f"{n}: {t}" for n, role, t in texts if t)
        lines.append(f"  {kind:<10}{secs:>7.1f}s  {text}")
    lines.append("")
    lines.append(f"  {'party':<12}{'role':<9}{'rows':>14}  files")
    for name, p in res.parties.items():
        rows = "-" if p.get("rows") is None else (
            f"{p['rows']}" if p["rows"] == p["rows_in"] else f"{p['rows']} of {p['rows_in']}")
        lines.append(f"  {name:<12}{p['role']:<9}{rows:>14}  {_rel(p['output'])}/: {' '.join(p['files'])}")
    active = next((p for p in res.parties.values() if p["role"] == "active"), None)
    ev = active.get("metrics") if active else None
    if ev:
        sets = [s for s in ("test", "train", "predict") if s in ev]
        names: list[str] = []
        for s in sets:
            names += [m for m in ev[s] if m != "rows" and m not in names]
        lines.append("")
        lines.append(f"  {'metric':<12}" + "".join(f"{s + ' (' + str(ev[s]['rows']) + ')':>16}" for s in sets))
        for m in names:
            cells = []
            for s in sets:
                v = ev[s].get(m)
                cells.append(f"{'-' if v is None else f'{v:.4f}':>16}")
            lines.append(f"  {m:<12}" + "".join(cells))
    return "\n".join(lines)

