"""One party's side of a job: the steps, in order, over its party context.

The same function runs in an embedded run (one process per party, started by
:func:`hefl.jobs.run_job`) and in a ``--party`` run (one host, one party). Each party reads
only its own files and writes only under ``OUTPUT/<party>/``.

Tags used between the parties (each under its own namespace, so steps never collide):
``psi/…`` (PSI of the training rows), ``split/…`` (held-out rows for ``evaluate``),
``train/…`` (the model's protocol), ``evaluate-test/…``, ``evaluate-train/…``,
``psi-predict/…`` and ``predict/…``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hefl._atomic import atomic_path, atomic_write_text, json_default
from hefl.checkpoint import Checkpointer
from hefl.errors import DataError, ProtocolError, TransportError

from ._data import PartyTable, read_table
from ._metrics import compute_metrics, roc_points
from ._models import encode_labels, get_adapter
from ._progress import Reporter
from .config import DEFAULT_METRICS, Job, resolve_task

__all__ = ["party_logging", "run_party"]

log = logging.getLogger("hefl.jobs")


@contextmanager
def party_logging(path: Path, party: str, level: int = logging.INFO, append: bool = False):
    """Send ``hefl.*`` log records (and Python warnings) of this process to ``path``.

    ``append``: keep what is there (a resumed run continues the log of the one it resumes).

    The console keeps showing what it showed before (its handlers are pinned to the
    root level), so the party log can be verbose without flooding the terminal.
    """
    root = logging.getLogger()
    pinned = []
    for h in root.handlers:
        if h.level == logging.NOTSET:
            h.setLevel(root.level)
            pinned.append(h)
    fh = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    fh.setFormatter(logging.Formatter(f"%(asctime)s [{party}] %(name)s %(levelname)s: %(message)s"))
    fh.setLevel(level)
    loggers = [logging.getLogger("hefl"), logging.getLogger("py.warnings")]
    old = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(fh)
        if lg.getEffectiveLevel() > level:
            lg.setLevel(level)
    was_capturing = logging.getLogger("py.warnings").handlers != [fh]
    logging.captureWarnings(True)
    try:
        yield
    finally:
        if was_capturing:
            logging.captureWarnings(False)
        for lg, lvl in old:
            lg.removeHandler(fh)
            lg.setLevel(lvl)
        for h in pinned:
            h.setLevel(logging.NOTSET)
        fh.close()


def run_party(job: Job, name: str, ctx: Any, reporter: Reporter | None = None, *,
              log_file: bool = True, resume: bool = False) -> dict:
    """Run party ``name``'s steps of ``job`` over ``ctx``; returns a summary (JSON-able dict).

    ``log_file=False`` when the caller already sends the log to ``OUTPUT/<party>/party.log``.
    ``resume``: training continues from the newest checkpoint all parties hold (each
    party checkpoints under ``OUTPUT/<party>/checkpoints/train/``).

    Raises
    ------
    Exception
        Whatever a step raised; ``exc.hefl_party`` / ``exc.hefl_step`` say where.
    """
    out = job.output / name
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or Reporter(name, None)
    party = _Party(job, name, ctx, reporter, out, resume)
    with party_logging(out / "party.log", name, append=resume) if log_file else nullcontext():
        log.info("job %s (%s): party %s, role %s, pid %d%s", job.name, job.path, name,
                 job.parties[name].role, os.getpid(), " — resuming" if resume else "")
        try:
            started = time.time()
            result = party.run()
            _remove_stale_outputs(out, started)
            return result
        except BaseException as exc:
            if isinstance(exc, TransportError):  # a lost or silent peer: its traceback says nothing more
                log.error("step %s stopped: %s: %s", party.step, type(exc).__name__, exc)
            else:
                log.exception("step %s failed (%s)", party.step, type(exc).__name__)
            try:
                exc.hefl_party = name  # type: ignore[attr-defined]
                exc.hefl_step = party.step  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            raise


def _remove_stale_outputs(out: Path, started: float) -> None:
    """After a successful run: remove the outputs of an earlier run that this one did not
    write again (a predictions.csv next to a newer model). A failed run leaves them all."""
    from .config import OUTPUT_FILES

    for fname in OUTPUT_FILES:
        f = out / fname
        try:
            if f.is_file() and f.stat().st_mtime < started - 2.0:  # coarse file-system clocks
                f.unlink()
                log.info("removed %s of an earlier run (this run did not write it)", fname)
        except OSError as exc:
            log.warning("could not remove %s of an earlier run: %s", f, exc)


class _Party:
    def __init__(self, job: Job, name: str, ctx: Any, reporter: Reporter, out: Path, resume: bool = False):
        self.job = job
        self.resume = resume
        self.name = name
        self.ctx = ctx
        self.rep = reporter
        self.out = out
        self.role = job.parties[name].role
        self.step = "load"
        self.table: PartyTable | None = None
        self.rows_in = 0
        self.train_rows: np.ndarray | None = None
        self.test_rows: np.ndarray | None = None
        self.model: Any = None  # the model's dict (its shape is the adapter's business)
        self.adapter = get_adapter(job.train.model)
        # only the label holder knows the task; other parties never record it
        self.task: Any = job.task if self.role == "active" else None
        self.classes: Any = None
        self.y: Any = None
        self.metrics: dict[str, Any] = {}
        self.files: list[str] = []
        self.steps: dict[str, dict] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> dict:
        t0 = time.perf_counter()
        spec = self.job.parties[self.name].data
        if spec is not None:
            self.table = read_table(self.job.resolve(spec.path), spec.format, spec.sep, spec.id_column,
                                    spec.label_column, spec.columns)
            self.rows_in = len(self.table)
            log.info("read %s: %d rows, %d feature columns", self.table.path, len(self.table),
                     len(self.table.columns))
        for item in self.job.config.steps:
            self.step = item.kind
            if item.kind == "train":
                total = self.job.model_params().model_dump().get(
                    "n_estimators" if self.job.train.model == "secureboost" else "max_iter")
                self.rep.start("train", total=total if self.role == "active" else None,
                               unit=self.adapter.curve_unit + "s")
            else:
                self.rep.start(item.kind)
            summary = getattr(self, f"_{item.kind}")(item.spec) or ""
            secs = self.rep.end(item.kind, summary)
            self.steps[item.kind] = {"seconds": round(secs, 3), "summary": summary}
        self.step = "done"
        if self.role == "active":
            self._write_metrics()
        self.files.append("party.log")
        return {
            "party": self.name, "role": self.role, "rows_in": self.rows_in,
            "rows": len(self.table) if self.table is not None else None,
            "steps": self.steps, "metrics": self.metrics.get("evaluation") if self.role == "active" else None,
            "files": sorted(set(self.files)), "output": str(self.out),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    @property
    def data_peers(self) -> list[str]:
        return [p for p in self.job.data_parties if p != self.name]

    # ------------------------------------------------------------------ psi
    def _psi(self, spec) -> str:
        from hefl.psi import intersect

        if self.table is None:
            return ""  # the arbiter holds no data
        before = len(self.table)
        rows = intersect(self.ctx, self.table.ids.tolist(), duplicates=spec.duplicates, peers=self.data_peers,
                         leader=spec.leader, n_jobs=spec.n_jobs, batch_size=spec.batch_size,
                         timeout=self.job.config.timeouts.recv, session="psi")
        if len(rows) == 0:
            raise DataError(f"PSI found no IDs shared by all parties ({before} rows here); "
                            "check that every party uses the same ID column and spelling")
        self.table = self.table.take(_by_id(self.table.ids, rows))
        log.info("PSI: %d of %d rows shared with %s", len(rows), before, ", ".join(self.data_peers))
        return f"{len(rows)} shared rows" if self.role == "active" else ""

    # ------------------------------------------------------------------ split for evaluate
    def _split(self) -> None:
        """Active party draws the held-out rows (seeded) and tells the others which they are."""
        ev = self.job.step("evaluate")
        if ev is None or ev.test_size <= 0 or self.table is None:
            return
        sub = self.ctx.sub("split")
        n = len(self.table)
        if self.role == "active":
            from sklearn.model_selection import train_test_split

            idx = np.arange(n)
            strat = None
            if ev.stratify and self.task in ("binary", "multiclass"):
                _, counts = np.unique(self.y, return_counts=True)
                if counts.min() >= 2:
                    strat = self.y
            n_test = int(np.ceil(ev.test_size * n))
            k = 1 if strat is None else int(np.unique(strat).size)
            if n_test < k or n - n_test < max(2, k):
                raise DataError(f"evaluate.test_size {ev.test_size} leaves {n - n_test} training and "
                                f"{n_test} test rows out of {n}"
                                + (f" (drawn stratified: each needs a row of each of the {k} classes)"
                                   if k > 1 else ""))
            tr, te = train_test_split(idx, test_size=ev.test_size, random_state=self.job.config.seed,
                                      stratify=strat)
            self.train_rows, self.test_rows = np.sort(tr), np.sort(te)
            for p in self.job.passive:
                sub.send(p, "rows", {"n_rows": n})
                sub.send(p, "test", self.test_rows.astype(np.int64))
        else:
            info = sub.recv(self.job.active, "rows")
            test = np.asarray(sub.recv(self.job.active, "test"), dtype=np.int64)
            if not isinstance(info, dict) or info.get("n_rows") != n:
                got = info.get("n_rows") if isinstance(info, dict) else "?"
                raise DataError(f"the active party has {got} aligned rows, this party {n}: align the rows "
                                "first (add a psi step) or give files with the same rows in the same order")
            if test.ndim != 1 or (test.size and (test.min() < 0 or test.max() >= n or np.any(np.diff(test) <= 0))):
                raise ProtocolError("held-out rows must be sorted, unique and in range", peer=self.job.active,
                                    tag="split/test")
            self.test_rows = test
            self.train_rows = np.setdiff1d(np.arange(n), test)
        log.info("evaluate split: %d training rows, %d held-out rows (seed %d)", self.train_rows.size,
                 self.test_rows.size, self.job.config.seed)

    # ------------------------------------------------------------------ train
    def _train(self, spec) -> str:
        if self.role == "active":
            assert self.table is not None and self.table.y is not None
            self.task = self.task or resolve_task(self.table.y, spec.task)
            self.y, self.classes = encode_labels(self.table.y, self.task)
            # the file may have changed since the job was checked: say so before training
            k = len(self.classes or [])
            if (self.task == "binary" and k != 2) or (self.task == "multiclass" and k < 2):
                d = self.job.parties[self.name].data
                raise DataError(f"{self.table.path}: label column {d.label_column!r} has {k} class(es) "
                                f"{self.classes[:5]} in the aligned rows; task {self.task!r} needs "
                                f"{'exactly 2' if self.task == 'binary' else 'at least 2'}")
        self._split()
        X = y = None
        if self.table is not None:
            rows = self.train_rows if self.train_rows is not None else np.arange(len(self.table))
            X = self.table.X[rows]
            if self.y is not None:
                y = self.y[rows]
        n_classes = len(self.classes) if self.classes else None
        self.model = self.adapter.fit(self.ctx.sub("train"), self.role, self.job, X, y, self.task or "",
                                      n_classes, self.rep, checkpoint=Checkpointer(self.out / "checkpoints" / "train"),
                                      resume=self.resume)
        self._save_model()
        self._importance_plot()
        tee = self.job.config.tee
        if tee is not None:  # hefl.tee: the aggregator's audit log, the parties' received log heads
            self.files.append(tee.audit_log if self.role == "arbiter" else "tee_heads.json")
        if self.role == "arbiter" and self.model.get("loss_curve"):
            metric, series = self.adapter.curve(self.model)
            self._loss_plot(metric, series)
        if self.role == "arbiter" and tee is not None:
            return f"TEE aggregator; audit log {tee.audit_log}"
        if self.role != "active":
            n_trees = ""
            if self.model.get("kind") == "SecureBoostPassive":
                n_trees = f"{len(self.model['splits'])} private splits"
            return n_trees
        metric, series = self.adapter.curve(self.model)
        self.metrics["training_curve"] = {"metric": metric, "unit": self.adapter.curve_unit, **series}
        self._loss_plot(metric, series)
        self._write_metrics()
        it = self.adapter.n_iterations(self.model)
        last = series.get("train") or []
        unit = self.adapter.curve_unit + ("s" if it != 1 else "")
        return f"{it} {unit}, train {metric} {last[-1]:.4g}" if last else f"{it} {unit}"

    def _save_model(self) -> None:
        assert self.model is not None
        doc = self.adapter.to_json(self.model)
        doc["job"] = {"name": self.job.name, "model": self.job.train.model, "party": self.name, "role": self.role,
                      "task": self.task, "classes": self.classes,
                      "id_column": getattr(self.job.parties[self.name].data, "id_column", None),
                      "columns": self.table.columns if self.table is not None else None}
        atomic_write_text(self.out / "model.json", json.dumps(doc, allow_nan=False, default=json_default))
        self.files.append("model.json")

    # ------------------------------------------------------------------ evaluate
    def _evaluate(self, spec) -> str:
        sets: list[tuple[str, np.ndarray | None]]
        n = len(self.table) if self.table is not None else 0
        if self.test_rows is not None:
            sets = [("test", self.test_rows), ("train", self.train_rows)]
        else:
            sets = [("train", np.arange(n) if self.table is not None else None)]
        results: dict[str, dict] = {}
        curves: dict[str, tuple] = {}
        names = spec.metrics or DEFAULT_METRICS.get(self.task or "", [])
        for label, rows in sets:
            X = self.table.X[rows] if self.table is not None and rows is not None else None
            out = self.adapter.predict(self.ctx.sub(f"evaluate-{label}"), self.role, self.job, self.model, X)
            if self.role != "active":
                continue
            assert out is not None and rows is not None
            y = self.y[rows]
            results[label] = {"rows": int(rows.size),
                              **compute_metrics(self.task, names, y, out, spec.threshold)}
            if self.task == "binary" and np.unique(y).size == 2:
                fpr, tpr = roc_points(y, out)
                curves[label] = (fpr, tpr, results[label].get("auc"))
        if self.role != "active":
            return ""
        self.metrics["evaluation"] = results
        self._write_metrics()
        if curves:
            self._plot("roc.png", "plot_roc", {k: curves[k] for k in ("test", "train") if k in curves},
                       f"ROC — {self.job.name}")
        main = "test" if "test" in results else "train"
        shown = [m for m in names if results[main].get(m) is not None][:3]
        return f"{main}: " + "  ".join(f"{m} {results[main][m]:.4f}" for m in shown)

    # ------------------------------------------------------------------ predict
    def _predict(self, spec) -> str:
        from hefl.psi import intersect

        if self.table is None:  # arbiter
            self.adapter.predict(self.ctx.sub("predict"), self.role, self.job, self.model, None)
            return ""
        d = spec.data[self.name]
        train_spec = self.job.parties[self.name].data
        assert train_spec is not None
        id_col = d.id_column or train_spec.id_column
        label = d.label_column if self.role == "active" else None
        columns = self.table.columns  # the model's features, by name, in training order
        ptable = read_table(self.job.resolve(d.path), d.format, d.sep or train_spec.sep, id_col, label, columns)
        n_in = len(ptable)
        use_psi = spec.psi if spec.psi is not None else ("psi" in self.job.step_kinds)
        if use_psi:
            psi_spec = self.job.step("psi")
            rows = intersect(self.ctx, ptable.ids.tolist(),
                             duplicates=psi_spec.duplicates if psi_spec else "raise", peers=self.data_peers,
                             leader=psi_spec.leader if psi_spec else None,
                             n_jobs=psi_spec.n_jobs if psi_spec else 1, timeout=self.job.config.timeouts.recv,
                             session="psi-predict")
            ptable = ptable.take(_by_id(ptable.ids, rows))
        out = self.adapter.predict(self.ctx.sub("predict"), self.role, self.job, self.model, ptable.X)
        if self.role != "active":
            return ""
        assert out is not None
        frame = pd.DataFrame({id_col: ptable.ids})
        if ptable.y is not None:
            frame[label] = ptable.y.to_numpy()
        if self.task == "binary":
            frame["score"] = out
            frame["prediction"] = np.asarray(self.classes, dtype=object)[(out >= spec.threshold).astype(int)]
        elif self.task == "multiclass":
            for k, c in enumerate(self.classes):
                frame[f"proba_{c}"] = out[:, k]
            frame["prediction"] = np.asarray(self.classes, dtype=object)[np.argmax(out, axis=1)]
        else:
            frame["prediction"] = out
        with atomic_path(self.out / "predictions.csv") as tmp:
            frame.to_csv(tmp, index=False)
        self.files.append("predictions.csv")
        text = f"{len(frame)} rows" + (f" (of {n_in} here)" if len(frame) != n_in else "") + " -> predictions.csv"
        if ptable.y is not None and len(frame):
            yv = ptable.y.to_numpy()
            if self.task == "regression":
                yenc = yv.astype(np.float64)
            else:
                lookup = {c: i for i, c in enumerate(self.classes)}
                known = np.array([v in lookup for v in yv])
                if not known.all():
                    raise DataError(f"the prediction file's label has classes the model never saw: "
                                    f"{sorted(set(yv[~known].tolist()))[:5]}")
                yenc = np.array([lookup[v] for v in yv], dtype=np.float64)
            names = DEFAULT_METRICS[self.task]
            ev = self.job.step("evaluate")
            if ev is not None and ev.metrics:
                names = ev.metrics
            self.metrics.setdefault("evaluation", {})["predict"] = {
                "rows": len(frame), **compute_metrics(self.task, names, yenc, out, spec.threshold)}
            self._write_metrics()
        return text

    # ------------------------------------------------------------------ outputs
    def _write_metrics(self) -> None:
        doc = {
            "job": self.job.name,
            "model": self.job.train.model,
            "task": self.task,
            "classes": self.classes,
            "evaluation": self.metrics.get("evaluation", {}),
            "rows": {"input": self.rows_in, "aligned": len(self.table) if self.table is not None else None,
                     "train": int(self.train_rows.size) if self.train_rows is not None else
                     (len(self.table) if self.table is not None else None),
                     "test": int(self.test_rows.size) if self.test_rows is not None else 0},
            "training_curve": self.metrics.get("training_curve"),
            "party_gain_share": (self.adapter.party_gain(self.model)
                                 if self.model is not None and hasattr(self.adapter, "party_gain") else None),
            "importance": self.metrics.get("importance"),
            "steps": self.steps,
            "timings": self.model.get("timings") if self.model else None,
        }
        atomic_write_text(self.out / "metrics.json", json.dumps(doc, indent=2, default=json_default, allow_nan=False))
        if "metrics.json" not in self.files:
            self.files.append("metrics.json")

    def _plot(self, filename: str, fn: str, *args) -> None:
        from . import _plots

        if not _plots.matplotlib_available():
            log.warning("matplotlib is not installed: no %s (pip install matplotlib)", filename)
            return
        try:
            getattr(_plots, fn)(self.out / filename, *args)
            self.files.append(filename)
        except Exception:
            log.warning("could not draw %s", filename, exc_info=True)

    def _loss_plot(self, metric: str, series: dict) -> None:
        if not any(series.values()):
            return  # e.g. hetero LR's arbiter protocol: only the arbiter sees the loss
        self._plot("loss.png", "plot_loss", metric, series, f"training {metric} — {self.job.name}",
                   self.adapter.curve_unit)

    def _importance_plot(self) -> None:
        if self.table is None or self.model is None:
            return
        imp, what = self.adapter.importance(self.role, self.model, self.table.columns)
        self.metrics["importance"] = imp
        self._plot("importance.png", "plot_importance", imp, f"feature importance — {self.name}'s features",
                   what)


def _by_id(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The PSI rows in ID order: PSI's own order is fresh every run (it follows the blinded
    values), sorting by the shared IDs gives every party the same order, run after run, so a
    seeded split or model is reproducible."""
    rows = np.asarray(rows, dtype=np.int64)
    keys = ids[rows].astype(str)
    if keys.size and all(k.isdigit() and len(k) < 19 for k in keys):
        return rows[np.lexsort((keys, keys.astype(np.int64)))]  # numeric IDs: 2 before 10 (then "07" < "7")
    return rows[np.argsort(keys, kind="stable")]
