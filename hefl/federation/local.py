"""Run every party of a protocol on this machine: as processes, or as threads.

:func:`run_local` starts one OS process per party (``fork`` where available, so closures
work), each with a :class:`~hefl.transport.ZmqChannel` on a free loopback port; the
ports are picked by the kernel at bind time and then handed to every party by the
parent, so there is no race for ports. The first failure -- a party raising, or a party
process dying -- is re-raised after the others have stopped: each survivor is told which
party is gone (its ``recv`` / ``send`` with that party fail at once with ``PeerLostError``
naming it, so it stops on its own, logs why and exits non-zero), gets
:data:`FAILURE_GRACE` seconds to do so, and is then killed with everything it started.
Each party runs in a process group of its own, so that nothing a party started -- not
even the children of a party that was killed -- outlives the run.

:func:`run_threads` runs every party as a thread over :class:`~hefl.transport.MemoryHub`
channels: fast unit tests of protocol code.

Results travel from a party process to the parent over a ``multiprocessing`` pipe
(pickled: parent and children are the same trusted program). Nothing received from a
*peer* is ever unpickled -- party-to-party traffic only uses the wire format.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from hefl.errors import PeerLostError, TimeoutError
from hefl.federation.context import PartyContext
from hefl.transport import wire
from hefl.transport.curve import generate_keypair
from hefl.transport.memory import MemoryHub

__all__ = ["RemoteTraceback", "run_local", "run_threads"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the parties get to bind, exchange addresses and see each other.
SETUP_TIMEOUT = 60.0

#: Seconds the other parties get, once a party has failed or died, to stop on their own
#: (they are told which peer is gone) before they are killed.
FAILURE_GRACE = 3.0


class RemoteTraceback(Exception):
    """Carries a party's traceback text as the ``__cause__`` of the re-raised error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb.rstrip()


def _note(exc: BaseException, text: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(text)


# ----------------------------------------------------------------------------- threads


def run_threads(
    fns: Mapping[str, Callable[[PartyContext], T]],
    *,
    timeout: float = 120.0,
    recv_timeout: float | None = None,
) -> dict[str, T]:
    """Run each party's function in a thread of this process over in-memory channels.

    Parameters
    ----------
    fns : mapping
        Party name -> function taking that party's :class:`PartyContext`.
    timeout : float
        Bound on the whole run (s).
    recv_timeout : float, optional
        Default ``recv`` timeout (default: ``timeout``).

    Returns
    -------
    dict
        Party name -> its function's return value.

    Raises
    ------
    Exception
        The first party's exception (the original object, with a note naming the
        party); the other parties' channels are aborted so they stop waiting.
    TimeoutError
        The run took longer than ``timeout``.
    """
    names = list(fns)
    for n in names:
        wire.validate_name(n)
    hub = MemoryHub(names, recv_timeout=recv_timeout or timeout)
    chans = {n: hub.channel(n) for n in names}
    results: dict[str, Any] = {}
    errors: list[tuple[float, str, BaseException]] = []
    lock = threading.Lock()
    changed = threading.Event()

    def body(name: str) -> None:
        ch = chans[name]
        try:
            value = fns[name](PartyContext(ch))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            with lock:
                errors.append((time.monotonic(), name, exc))
            hub.fail(name, f"party {name!r} failed with {type(exc).__name__}")
        else:
            with lock:
                results[name] = value
        finally:
            ch.close()
            changed.set()

    threads = [threading.Thread(target=body, args=(n,), name=f"hefl-party-{n}", daemon=True)
               for n in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while True:
        with lock:
            if errors or len(results) == len(names):
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        changed.wait(min(remaining, 0.5))
        changed.clear()
    with lock:
        first = min(errors, key=lambda e: e[0]) if errors else None
        finished = len(results) == len(names)
    if first is None and finished:
        for t in threads:
            t.join()
        return {n: results[n] for n in names}
    reason = (f"run aborted: party {first[1]!r} failed" if first else
              f"run did not finish within {timeout:.3g} s")
    hub.abort(reason)
    for t in threads:
        t.join(max(0.0, min(5.0, deadline - time.monotonic())))
    if first is None:
        with lock:
            pending = [n for n in names if n not in results]
        raise TimeoutError(f"parties {', '.join(pending)} did not finish within {timeout:.3g} s",
                           peer=pending[0] if pending else None)
    _, name, exc = first
    _note(exc, f"raised by party {name!r} (hefl.federation.run_threads)")
    raise exc


# ----------------------------------------------------------------------------- processes


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the parent dies, so no party outlives a killed launcher."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _own_group() -> None:
    """Make this party process the leader of a process group of its own (POSIX)."""
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:  # pragma: no cover - e.g. already a session leader
            pass


def _watch_launcher(notices: Any, chan: Any) -> None:
    """Thread of a party process: the launcher's notices ("party X is gone") mark peers lost,
    so a party waiting on a dead peer fails at once with ``PeerLostError`` naming it."""
    while True:
        try:
            kind, peer, reason = notices.recv()  # from our own launcher, never from a peer
        except Exception:  # noqa: BLE001 - EOF: the launcher is done with us, or gone
            return
        if kind == "lost":
            try:
                chan.mark_lost(peer, reason)
            except Exception:  # never let the watcher take the party down
                log.debug("could not mark %s lost", peer, exc_info=True)


def _text(exc: BaseException) -> str:
    """``str(exc)``, or what can be had when that raises (a broken ``__str__``)."""
    for how in (str, repr):
        try:
            return how(exc)
        except Exception:  # noqa: BLE001, S112 - try the next way of showing it
            continue
    return f"<unprintable {type(exc).__name__}>"


def _error_report(exc: BaseException) -> tuple:
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # noqa: BLE001 - the report matters more than its traceback
        tb = ""
    blob: bytes | None
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)  # our own bytes: only checking that it round-trips
    except Exception:  # noqa: BLE001
        blob = None
    return ("err", time.monotonic(), blob, f"{type(exc).__module__}.{type(exc).__qualname__}",
            _text(exc), tb)


def _party_main(name: str, fn: Callable[[PartyContext], Any], conn: Any, notices: Any,
                peers: list[str], options: dict, parent_pid: int) -> None:
    # Everything inherited from the launcher stays uncollected here: its garbage may hold
    # ZeroMQ sockets, frames or trackers whose I/O threads did not survive the fork, and
    # finalising those in the child crashes it (seen as SIGSEGV in a GC pass).
    gc.freeze()
    _own_group()
    _die_with_parent(parent_pid)
    from hefl.transport.zmq_channel import ZmqChannel

    chan = None
    try:
        chan = ZmqChannel(name, peers, bind="tcp://127.0.0.1:*", **options)
        threading.Thread(target=_watch_launcher, args=(notices, chan), name=f"hefl-launcher-{name}",
                         daemon=True).start()
        conn.send(("addr", chan.bound_address))
        _kind, addresses = conn.recv()
        chan.connect(addresses)
        chan.wait_ready(SETUP_TIMEOUT)
        result = fn(PartyContext(chan))
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
        # Report before closing: our "bye" makes peers fail too, and the parent must see
        # the root cause first.
        try:
            conn.send(_error_report(exc))
        except Exception:  # noqa: BLE001 - parent gone; PDEATHSIG finishes us
            pass
        if chan is not None:
            chan.close(linger=0)
        conn.close()
        sys.exit(1)
    try:
        chan.close()  # delivers what is still queued (up to the linger)
    except Exception:  # the result is what counts now
        log.exception("party %s: error while closing its channel", name)
    try:
        blob = pickle.dumps(result)
        pickle.loads(blob)  # our own bytes: the parent must be able to read them back
        conn.send(("ok", time.monotonic(), result))
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
        conn.send(_error_report(TypeError(
            f"the result of party {name!r} cannot be returned to the parent: "
            f"{type(exc).__name__}: {exc}")))
        conn.close()
        sys.exit(1)
    conn.close()


def _descendants(pids: list[int]) -> list[int]:
    """All descendants of ``pids`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out: list[int] = []
    todo = list(pids)
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_all(procs: list[Any], groups: bool = False) -> None:
    """SIGKILL the party processes still alive and all their descendants; with ``groups``
    also every party's process group, which still holds what a party that is already
    dead had started (its orphans are no longer its descendants)."""
    alive = [p for p in procs if p.is_alive()]
    if not alive and not groups:
        return
    victims = _descendants([p.pid for p in alive])
    for p in alive:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except OSError:
            pass
    if groups and hasattr(os, "killpg"):
        for p in procs:
            if p.pid is None:
                continue
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group the party made (see _own_group)
            except OSError:  # gone already, or never made
                pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for p in alive:
        p.join(5.0)


def _rebuild(name: str, report: tuple) -> BaseException:
    _, _ts, blob, type_name, message, tb = report
    exc: Any = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)  # from our own forked child, never from a peer
        except Exception:  # noqa: BLE001
            exc = None
    if not isinstance(exc, Exception):
        exc = RuntimeError(f"party {name!r} failed with {type_name}: {message}")
    exc.__cause__ = RemoteTraceback(tb)
    _note(exc, f"raised by party {name!r} (hefl.federation.run_local)")
    return exc


def _curve_options(names: list[str], curve_keys: Any) -> dict[str, dict]:
    if not curve_keys:
        return {n: {} for n in names}
    if curve_keys is True:
        keys = {n: generate_keypair() for n in names}
    else:
        keys = {n: tuple(curve_keys[n]) for n in names}
    publics = {n: k[0] for n, k in keys.items()}
    return {n: {"curve_secret_key": keys[n][1],
                "curve_public_keys": {p: publics[p] for p in names if p != n}} for n in names}


def run_local(
    fns: Mapping[str, Callable[[PartyContext], T]],
    *,
    timeout: float = 600.0,
    recv_timeout: float = 300.0,
    curve_keys: bool | Mapping[str, tuple[str, str]] | None = None,
    heartbeat_interval: float | None = None,
    heartbeat_timeout: float = 10.0,
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
) -> dict[str, T]:
    """Run each party's function in its own process, over ZeroMQ on loopback.

    Parameters
    ----------
    fns : mapping
        Party name -> function taking that party's :class:`PartyContext`. With the
        ``fork`` start method (Linux, macOS) closures and lambdas work.
    timeout : float
        Bound on the whole run (s).
    recv_timeout : float
        Default ``recv`` timeout inside the parties (s).
    curve_keys : bool or mapping, optional
        ``True``: fresh CurveZMQ key pairs for every party; a mapping: party name ->
        ``(public, secret)`` Z85 keys; ``None``: plaintext (loopback only anyway).
    heartbeat_interval, heartbeat_timeout : float
        Peer-loss detection inside the parties (s).
    max_message_bytes : int
        Largest message between parties.

    Returns
    -------
    dict
        Party name -> its function's return value (must be picklable).

    Raises
    ------
    Exception
        The first failure: the exception a party raised (same type; its traceback text
        is the ``__cause__``, a note names the party), or ``PeerLostError`` naming a
        party whose process died without reporting. The other parties are told which
        party is gone and get :data:`FAILURE_GRACE` seconds to stop on their own (they
        fail with ``PeerLostError`` naming it); how each ended is in the error's notes
        and in ``hefl_others`` (party -> one line). Then every party process, and
        everything it started, is killed.
    SystemExit
        This process got SIGTERM or SIGHUP while the parties ran (the parties are
        killed first).
    TimeoutError
        The run took longer than ``timeout``.
    """
    names = list(fns)
    if not names:
        return {}
    for n in names:
        wire.validate_name(n)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    mp: Any = multiprocessing.get_context(method)
    curve = _curve_options(names, curve_keys)
    base = {"recv_timeout": recv_timeout, "heartbeat_interval": heartbeat_interval,
            "heartbeat_timeout": heartbeat_timeout, "max_message_bytes": max_message_bytes}
    procs: dict[str, Any] = {}
    conns: dict[str, Any] = {}
    notices: dict[str, Any] = {}
    start = time.monotonic()
    deadline = start + timeout
    handlers: dict = {}
    if method == "fork":
        gc.collect()  # the launcher's own garbage is finalised here, where that is safe
    try:
        for n in names:
            parent_conn, child_conn = mp.Pipe(duplex=True)
            notice_r, notice_w = mp.Pipe(duplex=False)
            p = mp.Process(
                target=_party_main, name=f"hefl-party-{n}",
                args=(n, fns[n], child_conn, notice_r, [x for x in names if x != n],
                      {**base, **curve[n]}, os.getpid()),
            )
            p.start()
            if method == "fork" and hasattr(os, "setpgid"):
                try:  # the child does it too; whoever is first wins the race with a kill
                    os.setpgid(p.pid, p.pid)
                except OSError:
                    pass
            child_conn.close()
            notice_r.close()
            procs[n], conns[n], notices[n] = p, parent_conn, notice_w
        handlers = _stop_on_signals()

        # Phase 1: every party binds a free port and tells us where.
        addresses: dict[str, str] = {}
        setup_deadline = min(deadline, time.monotonic() + SETUP_TIMEOUT)
        while len(addresses) < len(names):
            events = _next_events(procs, conns, [n for n in names if n not in addresses],
                                  setup_deadline)
            if not events:
                raise TimeoutError("party processes did not start within "
                                   f"{SETUP_TIMEOUT:.0f} s", peer=next(
                                       n for n in names if n not in addresses))
            for name, report in events:
                if report and report[0] == "addr":
                    addresses[name] = report[1]
                else:
                    _raise_first([(name, report)], procs, conns, notices, {}, 0.0)
        for n in names:
            conns[n].send(("peers", addresses))

        # Phase 2: wait for every result; the first failure ends the run.
        results: dict[str, Any] = {}
        while len(results) < len(names):
            waiting = [n for n in names if n not in results]
            events = _next_events(procs, conns, waiting, deadline)
            if not events:
                raise TimeoutError(
                    f"parties {', '.join(waiting)} did not finish within {timeout:.3g} s",
                    peer=waiting[0],
                )
            failures = []
            for name, report in events:
                if report and report[0] == "ok":
                    results[name] = report[2]
                else:
                    failures.append((name, report))
            if failures:
                _raise_first(failures, procs, conns, notices, results,
                             min(deadline, time.monotonic() + FAILURE_GRACE))
        for n in names:
            procs[n].join(max(1.0, min(30.0, deadline - time.monotonic())))
        return {n: results[n] for n in names}
    finally:
        _kill_all(list(procs.values()), groups=True)  # what a party started ends with the run
        for c in [*conns.values(), *notices.values()]:
            c.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)


def _stop_on_signals() -> dict:
    """While the parties run, SIGTERM and SIGHUP to this process (when left at their default,
    which ends it on the spot) raise ``SystemExit`` instead, so that the parties' process
    groups are killed on the way out. Main thread only; returns the handlers to restore."""
    old: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return old
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) is signal.SIG_DFL:
                old[sig] = signal.signal(sig, _exit_on_signal)
        except (OSError, ValueError):  # pragma: no cover
            pass
    return old


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _next_events(procs: dict, conns: dict, waiting: list[str],
                 deadline: float) -> list[tuple[str, tuple | None]]:
    """Block until some waited-for party reports or dies: ``[(name, report)]``.

    A party that died without reporting gets ``("died", time, how)``. An empty list
    means the deadline passed.
    """
    by_conn = {conns[n]: n for n in waiting}
    by_sentinel = {procs[n].sentinel: n for n in waiting}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        # A child the party forked holds copies of its pipe and sentinel, so neither fires
        # when the party itself dies: its exit code is looked at on every pass too.
        ready = multiprocessing.connection.wait([*by_conn, *by_sentinel], timeout=min(remaining, 0.25))
        names = {by_conn.get(r) or by_sentinel[r] for r in ready}
        names.update(n for n in waiting if procs[n].exitcode is not None)
        out: dict[str, tuple | None] = {}
        for name in sorted(names):
            report: tuple | None = None
            try:
                if conns[name].poll(0):
                    report = conns[name].recv()
            except (EOFError, OSError):
                report = None
            except Exception as exc:  # noqa: BLE001 - its report could not be read back
                why = f"the report of party {name!r} could not be read: {type(exc).__name__}: {_text(exc)}"
                report = ("err", time.monotonic(), None, "builtins.TypeError", why, "")
            if report is None:
                proc = procs[name]
                proc.join(2.0)  # its pipe is closed or its sentinel fired: it is exiting
                code = proc.exitcode
                if code is None:
                    continue
                how = _exit_text(code)
                report = ("died", time.monotonic(), how)
            out[name] = report
        if out:
            return list(out.items())


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _raise_first(failures: list[tuple[str, tuple | None]], procs: dict, conns: dict,
                 notices: dict, done: Mapping[str, Any], grace_deadline: float) -> None:
    """Raise the first failure, once the other parties have stopped.

    Every party still running is told which party is gone, and gets until
    ``grace_deadline`` to stop on its own (it fails with ``PeerLostError`` naming that
    party, logs it and exits non-zero); then it is killed. How each of them ended is
    added to the raised error: a note per party, and ``hefl_others`` (party -> text).
    """
    def ts(item: tuple[str, tuple | None]) -> float:
        rep = item[1]
        return rep[1] if rep else float("inf")

    name, report = min(failures, key=ts)
    if report and report[0] == "err":
        exc = _rebuild(name, report)
        short = report[3].rsplit(".", 1)[-1]
        first_line = (report[4].splitlines() or [""])[0][:300]
        reason = f"party failed with {short}: {first_line}"
    else:
        how = report[2] if report else "exited"
        exc = PeerLostError(f"party process {how} before returning a result", peer=name)
        reason = f"party process {how} (seen by the launcher)"
    log.debug("run_local: party %s failed; stopping the others", name)
    others: dict[str, tuple | None] = {n: rep for n, rep in failures if n != name}
    waiting = [n for n, p in procs.items()
               if n != name and n not in others and n not in done and p.is_alive()]
    graced = time.monotonic() < grace_deadline
    if graced:
        for n in waiting:
            try:
                notices[n].send(("lost", name, reason))
            except (OSError, ValueError):
                pass
        while waiting:
            events = _next_events(procs, conns, waiting, grace_deadline)
            if not events:
                break
            for n, rep in events:
                others[n] = rep
                waiting.remove(n)
    texts = {n: _outcome(rep) for n, rep in others.items()}
    if graced:
        texts.update({n: "still running at the end of the grace period: killed" for n in waiting})
    for n in sorted(texts):
        _note(exc, f"party {n!r} then stopped: {texts[n]}")
    try:
        exc.hefl_others = texts  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover
        pass
    _kill_all(list(procs.values()), groups=True)
    raise exc


def _outcome(report: tuple | None) -> str:
    """One line on how a party ended, from its report."""
    if report and report[0] == "err":
        return f"{report[3].rsplit('.', 1)[-1]}: {(report[4].splitlines() or [''])[0]}"
    if report and report[0] == "ok":
        return "finished its part"
    if report and report[0] == "died":
        return f"its process {report[2]}"
    return "exited"
