"""Progress: parties report step and tree/epoch events; the launcher shows them.

A party calls :class:`Reporter` methods (``start`` / ``update`` / ``end``); every event is
written to the party's log and handed to a *sink*: in an embedded run a one-way pipe to
the launcher process (small pickled tuples between processes of the same program, never
from a peer), in a ``--party`` run the display of this process directly.

:class:`Display` draws one tqdm bar per step on a terminal (trees or epochs for
``train``, parties done for the others) and plain lines when the output is not a
terminal, so logs and CI stay readable.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Display", "PipeLogHandler", "PipeReader", "Reporter"]

log = logging.getLogger("hefl.jobs")

Event = tuple[str, str, str, dict]  # (party, kind, step, data)

_BAR = "{desc} {bar:24} {n_fmt}/{total_fmt}{unit} [{elapsed}]{postfix}"


class Reporter:
    """What a party uses to report progress."""

    def __init__(self, party: str, sink: Callable[[Event], None] | None):
        self.party = party
        self._sink = sink
        self._t0: dict[str, float] = {}

    def _emit(self, kind: str, step: str, data: dict) -> None:
        if self._sink is None:
            return
        try:
            self._sink((self.party, kind, step, data))
        except Exception:  # noqa: BLE001 - progress must never break a job
            self._sink = None

    def start(self, step: str, total: int | None = None, unit: str | None = None) -> None:
        self._t0[step] = time.perf_counter()
        log.info("step %s: started", step)
        self._emit("start", step, {"total": total, "unit": unit})

    def update(self, step: str, done: int, total: int | None = None, **info: Any) -> None:
        extra = " ".join(f"{k}={v}" for k, v in info.items())
        log.info("step %s: %d%s %s", step, done, f"/{total}" if total else "", extra)
        self._emit("update", step, {"done": done, "total": total, "info": info})

    def end(self, step: str, summary: str = "") -> float:
        dt = time.perf_counter() - self._t0.get(step, time.perf_counter())
        log.info("step %s: done in %.2f s%s", step, dt, f" ({summary})" if summary else "")
        self._emit("end", step, {"seconds": dt, "summary": summary})
        return dt


class Display:
    """Shows the parties' events on the launcher's terminal.

    Parameters
    ----------
    participants : dict
        Step name -> the parties that report it.
    stream : file, optional
        Where to draw (default ``sys.stderr``).
    tty : bool, optional
        Bars (``True``) or plain lines (``False``); default: whether ``stream`` is a terminal.
    enabled : bool
        ``False`` shows nothing.
    """

    def __init__(self, participants: dict[str, list[str]], stream: Any = None, tty: bool | None = None,
                 enabled: bool = True):
        self.participants = participants
        self.stream = stream or sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.enabled = enabled
        self.bars: dict[str, Any] = {}
        self.ended: dict[str, dict[str, dict]] = {}
        self.started: dict[str, float] = {}
        self.totals: dict[str, tuple[int | None, str | None, str]] = {}  # step -> (total, unit, party)
        self.seconds: dict[str, float] = {}
        self.summaries: dict[str, dict[str, str]] = {}
        self._order = list(participants)
        self._cur = 0
        self._held: list[Event] = []
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        with self._lock:
            try:
                self._dispatch(event)
            except Exception:
                log.debug("progress display failed", exc_info=True)

    def _dispatch(self, event: Event) -> None:
        """Steps are shown one after the other: a party that is already in the next step
        (parties are not in lockstep) has its events held until the current step is done."""
        _, kind, step, data = event
        if kind == "log":
            self._write(data.get("text", ""))
            return
        idx = self._order.index(step) if step in self._order else -1
        if idx > self._cur:
            self._held.append(event)
            return
        self._handle(event)
        while self._cur < len(self._order) and self._order[self._cur] in self.seconds:
            self._cur += 1
            held, self._held = self._held, []
            for ev in held:
                if self._order.index(ev[2]) > self._cur:
                    self._held.append(ev)
                else:
                    self._handle(ev)

    def _write(self, text: str) -> None:
        if not text:
            return  # log lines show even with progress off (-q)
        if self.enabled and self.tty and self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _handle(self, event: Event) -> None:
        party, kind, step, data = event
        if kind == "start":
            self.started.setdefault(step, time.perf_counter())
            if data.get("total") and step not in self.totals:
                self.totals[step] = (int(data["total"]), data.get("unit"), party)
            self._bar(step, data)
        elif kind == "update":
            owner = self.totals.get(step, (None, None, party))[2]
            bar = self._bar(step, {})
            if bar is not None and party == owner:
                if data.get("total") and bar.total != data["total"]:
                    bar.total = int(data["total"])
                bar.n = int(data["done"])
                info = data.get("info") or {}
                if info:
                    bar.set_postfix(info, refresh=False)
                bar.refresh()
        elif kind == "end":
            done = self.ended.setdefault(step, {})
            done[party] = data
            if data.get("summary"):
                self.summaries.setdefault(step, {})[party] = data["summary"]
            bar = self.bars.get(step)
            if bar is not None and step not in self.totals:
                bar.n = len(done)
                bar.refresh()
            if set(done) >= set(self.participants.get(step, [])):
                self._finish(step)

    def _bar(self, step: str, data: dict):
        if not (self.enabled and self.tty):
            return None
        bar = self.bars.get(step)
        if bar is None:
            from tqdm import tqdm

            if step in self.totals:
                total, unit, _ = self.totals[step]
            else:
                total, unit = len(self.participants.get(step, [])) or None, "parties"
            import shutil

            cols = shutil.get_terminal_size((100, 24)).columns or 100
            bar = tqdm(total=total, unit=f" {unit}" if unit else "", desc=f"{step:<9}", file=self.stream,
                       leave=True, ncols=cols, mininterval=0.2, bar_format=_BAR)
            self.bars[step] = bar
        elif step in self.totals and bar.total != self.totals[step][0]:
            bar.total = self.totals[step][0]
            bar.unit = f" {self.totals[step][1]}" if self.totals[step][1] else ""
        return bar

    def _finish(self, step: str) -> None:
        if step in self.seconds:
            return
        self.seconds[step] = time.perf_counter() - self.started.get(step, time.perf_counter())
        items = self.summaries.get(step, {})
        first = self.totals.get(step, (None, None, None))[2]
        ordered = sorted(items.items(), key=lambda kv: kv[0] != first)
        if self.tty and ordered:
            ordered = ordered[:1]  # one line per bar; the summary table has every party's
        text = "; ".join(s if (p == first or len(items) == 1) else f"{p}: {s}" for p, s in ordered)
        bar = self.bars.pop(step, None)
        if bar is not None:
            bar.set_postfix_str("", refresh=False)
            bar.bar_format = _BAR.replace("{postfix}", "") + (" " + text.replace("{", "{{").replace("}", "}}")
                                                                if text else "")
            bar.refresh()
            bar.close()
        elif self.enabled:
            print(f"{step:<9} done in {self.seconds[step]:6.1f} s" + (f"  {text}" if text else ""),
                  file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            for ev in held:  # a run that ended early: show what is left, in order
                try:
                    self._handle(ev)
                except Exception:
                    log.debug("progress display failed", exc_info=True)
            for bar in self.bars.values():
                try:
                    bar.close()
                except Exception:
                    log.debug("progress display failed", exc_info=True)
            self.bars.clear()


class BriefFormatter(logging.Formatter):
    """A console formatter without tracebacks: a record's traceback goes to the party's
    ``party.log`` (and to the console with ``hefl -vv``), not in front of the one-line
    error the user acts on."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class PipeLogHandler(logging.Handler):
    """In an embedded party process: console log records go to the launcher's display
    (which prints them above the progress bars) instead of straight to the terminal."""

    def __init__(self, party: str, send: Callable[[Event], None], level: int):
        super().__init__(level)
        self.party = party
        self.send = send
        brief = level == logging.NOTSET or level > logging.DEBUG  # hefl -vv: tracebacks too
        self.setFormatter((BriefFormatter if brief else logging.Formatter)(
            f"%(asctime)s [{party}] %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send((self.party, "log", "", {"text": self.format(record)}))
        except Exception:  # noqa: BLE001
            self.handleError(record)


class PipeReader:
    """Reads the parties' event pipes in a background thread and feeds a :class:`Display`."""

    def __init__(self, conns: list[Any], display: Display):
        self.conns = list(conns)
        self.display = display
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hefl-progress", daemon=True)

    def start(self) -> PipeReader:
        self._thread.start()
        return self

    def _loop(self) -> None:
        import multiprocessing.connection as mpc

        live = list(self.conns)
        while live:
            ready = mpc.wait(live, timeout=0.1)
            for c in ready:
                try:
                    ev = c.recv()  # type: ignore[union-attr,call-arg]
                except (EOFError, OSError):
                    live.remove(c)
                    continue
                self.display.handle(ev)  # type: ignore[arg-type]
            if not ready and self._stop.is_set():
                break

    def stop(self) -> None:
        """Drain what is left in the pipes, then stop."""
        self._stop.set()
        self._thread.join(5.0)
