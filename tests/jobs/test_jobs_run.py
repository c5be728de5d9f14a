"""``hefl run``: the embedded runner end to end, its outputs, and failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from jobhelpers import REPO, TEST_DATA, wait_no_pids, write_yaml

from hefl.jobs import PartyFailed, format_summary, load_job, run_job
from hefl.jobs._progress import Display

HEFL = [sys.executable, "-m", "hefl.cli"]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    """The README's command, real Paillier-2048 keys; AUC on the held-out rows."""
    out = tmp_path / "qs"
    proc = subprocess.run([*HEFL, "run", "configs/quickstart.yaml", "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "hefl run quickstart: done in" in proc.stdout
    assert "auc" in proc.stdout
    m = json.loads((out / "guest" / "metrics.json").read_text())
    assert m["evaluation"]["test"]["auc"] >= 0.95
    assert m["evaluation"]["test"]["rows"] == 114 and m["rows"]["aligned"] == 569
    assert len(m["training_curve"]["train"]) == 10
    assert {"model.json", "metrics.json", "roc.png", "loss.png", "importance.png", "party.log"} <= \
        {p.name for p in (out / "guest").iterdir()}
    assert {p.name for p in (out / "host").iterdir()} == {"model.json", "importance.png", "party.log", "checkpoints"}
    assert sorted(p.name for p in (out / "host" / "checkpoints" / "train").iterdir()) == [
        "ckpt-000008.npz", "ckpt-000009.npz", "ckpt-000010.npz"]  # the newest three trees
    host_model = json.loads((out / "host" / "model.json").read_text())
    assert host_model["kind"] == "SecureBoostPassive" and host_model["splits"]
    guest_model = json.loads((out / "guest" / "model.json").read_text())
    assert guest_model["kind"] == "SecureBoostActive" and len(guest_model["trees"]) == 10


def test_embedded_run_with_predict_step(tmp_path, job_doc):
    job_doc["steps"].append({"predict": {"data": {
        "guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv"), "label_column": "y"},
        "host": {"path": str(TEST_DATA / "breast_hetero_host.csv")}}}})
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    stream = io.StringIO()
    res = run_job(job, stream=stream)
    text = stream.getvalue()
    for step in ("psi", "train", "evaluate", "predict"):
        assert f"{step:<9} done in" in text  # not a terminal: one plain line per step
    g, h = res.parties["guest"], res.parties["host"]
    assert g["rows"] == h["rows"] == 569
    assert set(g["metrics"]) == {"test", "train", "predict"}
    assert g["metrics"]["test"]["rows"] == 143
    pred = pd.read_csv(job.output / "guest" / "predictions.csv")
    assert list(pred.columns) == ["id", "y", "score", "prediction"]
    assert len(pred) == 569 and pred["score"].between(0, 1).all()
    assert set(pred["prediction"]) <= {0, 1}
    assert not (job.output / "host" / "predictions.csv").exists()  # each party writes only its own
    assert not (job.output / "host" / "metrics.json").exists()
    summary = format_summary(res)
    assert "predict" in summary and "auc" in summary and "guest" in summary
    log = (job.output / "host" / "party.log").read_text()
    assert "step train: done" in log and "[host]" in log


def test_predict_reads_the_model_features_by_name(tmp_path, job_doc):
    # a prediction file whose columns come in another order, and a predict `columns` key in
    # another order: the model still gets its features as trained (by name)
    guest = pd.read_csv(TEST_DATA / "breast_hetero_guest.csv")
    feats = [c for c in guest.columns if c not in ("id", "y")]
    guest[["y", "id", *feats[::-1]]].to_csv(tmp_path / "guest_shuffled.csv", index=False)
    job_doc["steps"] = job_doc["steps"][:2]
    scores = []
    for path, columns in ((TEST_DATA / "breast_hetero_guest.csv", None),
                          (tmp_path / "guest_shuffled.csv", feats[::-1])):
        doc = json.loads(json.dumps(job_doc))
        doc["output"] = str(tmp_path / f"out{len(scores)}")
        spec = {"path": str(path), **({"columns": columns} if columns else {})}
        doc["steps"].append({"predict": {"data": {
            "guest": spec, "host": {"path": str(TEST_DATA / "breast_hetero_host.csv")}}}})
        job = load_job(write_yaml(tmp_path / "job.yaml", doc))
        run_job(job, stream=io.StringIO())
        scores.append(pd.read_csv(job.output / "guest" / "predictions.csv").sort_values("id"))
    assert np.array_equal(scores[0]["score"].to_numpy(), scores[1]["score"].to_numpy())


@pytest.mark.parametrize("data, label, task, columns", [
    ("vehicle_scale", "y", "multiclass", ["proba_0", "proba_1", "proba_2", "proba_3"]),
    ("motor", "motor_speed", "regression", []),
])
def test_multiclass_and_regression(tmp_path, job_doc, data, label, task, columns):
    id_col = "idx" if data == "motor" else "id"
    for party in ("guest", "host"):
        d = job_doc["parties"][party]["data"]
        d["path"] = str(TEST_DATA / f"{data}_hetero_{party}.csv")
        d["id_column"] = id_col
    job_doc["parties"]["guest"]["data"]["label_column"] = label
    job_doc["steps"].append({"predict": {"data": {
        p: {"path": str(TEST_DATA / f"{data}_hetero_{p}.csv")} for p in ("guest", "host")}}})
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    assert job.task == task
    res = run_job(job, progress=False)
    ev = res.parties["guest"]["metrics"]["test"]
    if task == "regression":
        assert {"rmse", "mae", "r2"} <= set(ev) and ev["r2"] > 0.5
    else:
        assert {"accuracy", "logloss"} <= set(ev) and ev["accuracy"] > 0.5
    pred = pd.read_csv(job.output / "guest" / "predictions.csv")
    assert list(pred.columns) == [id_col, *columns, "prediction"]
    if columns:
        np.testing.assert_allclose(pred[columns].sum(axis=1), 1.0, atol=1e-9)


def test_hetero_lr_job(tmp_path, job_doc):
    from hefl.jobs._models import unavailable_reason

    if unavailable_reason("hetero_lr"):
        pytest.skip(unavailable_reason("hetero_lr"))
    job_doc["steps"][1] = {"train": {"model": "hetero_lr", "params": {"max_iter": 3, "batch_size": 256}}}
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    res = run_job(job, progress=False)
    assert res.parties["guest"]["metrics"]["test"]["auc"] > 0.9
    g = json.loads((job.output / "guest" / "model.json").read_text())
    h = json.loads((job.output / "host" / "model.json").read_text())
    assert len(g["coef"][0]) == 10 and len(h["coef"][0]) == 20  # each party knows only its own weights
    assert "intercept" not in h


def test_a_failed_party_stops_the_run(tmp_path, job_doc):
    """No PSI and a host file with fewer rows: the host fails mid-protocol; `hefl run` exits 1
    with the host's error and leaves no process behind."""
    short = tmp_path / "host_short.csv"
    pd.read_csv(TEST_DATA / "breast_hetero_host.csv").iloc[:500].to_csv(short, index=False)
    job_doc["parties"]["host"]["data"]["path"] = str(short)
    job_doc["steps"] = job_doc["steps"][1:]  # no psi step
    path = write_yaml(tmp_path / "failing-job.yaml", job_doc)
    proc = subprocess.run([*HEFL, "run", str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "party 'host' failed in step 'train': DataError" in proc.stderr
    assert "the active party has 569 aligned rows, this party 500" in proc.stderr
    assert "host's log:" in proc.stderr
    assert "Traceback" not in proc.stderr  # the traceback is for party.log (and hefl -vv)
    assert wait_no_pids(str(path)) == []
    log = (tmp_path / "out" / "host" / "party.log").read_text()
    assert "DataError" in log and "Traceback (most recent call last)" in log
    proc = subprocess.run([*HEFL, "-vv", "run", "-q", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


def test_outputs_of_an_earlier_run_do_not_outlive_a_successful_one(tmp_path, job_doc):
    import os

    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    stale = job.output / "guest" / "predictions.csv"  # an earlier run's, with a predict step
    stale.parent.mkdir(parents=True)
    stale.write_text("id,score\n1,0.5\n")
    os.utime(stale, (1e9, 1e9))
    mine = job.output / "guest" / "notes.txt"  # not a hefl output: never touched
    mine.write_text("keep")
    os.utime(mine, (1e9, 1e9))
    bad = tmp_path / "guest_text.csv"
    frame = pd.read_csv(TEST_DATA / "breast_hetero_guest.csv")
    frame["x3"] = "abc"
    frame.to_csv(bad, index=False)
    failing = json.loads(json.dumps(job_doc))
    failing["parties"]["guest"]["data"]["path"] = str(bad)
    with pytest.raises(PartyFailed):
        run_job(load_job(write_yaml(tmp_path / "failing.yaml", failing)), progress=False)
    assert stale.exists()  # a failed run leaves the earlier outputs
    run_job(job, progress=False)
    assert not stale.exists() and mine.read_text() == "keep"
    assert (job.output / "guest" / "model.json").exists()


def test_run_job_raises_party_failed(tmp_path, job_doc):
    bad = tmp_path / "guest_text.csv"
    frame = pd.read_csv(TEST_DATA / "breast_hetero_guest.csv")
    frame["x3"] = "abc"
    frame.to_csv(bad, index=False)
    job_doc["parties"]["guest"]["data"]["path"] = str(bad)
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    with pytest.raises(PartyFailed) as info:
        run_job(job, progress=False)
    assert info.value.party == "guest"
    assert "feature column(s) ['x3'] are not numeric" in str(info.value)


def test_model_not_available_is_refused_before_start(tmp_path, job_doc, monkeypatch):
    from hefl.cli import main
    from hefl.jobs import _models

    monkeypatch.setattr(_models, "unavailable_reason",
                        lambda m: "model 'hetero_lr' is not available yet" if m == "hetero_lr" else None)
    from hefl.jobs import runner

    monkeypatch.setattr(runner, "unavailable_reason", _models.unavailable_reason)
    job_doc["steps"][1] = {"train": {"model": "hetero_lr"}}
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_progress_display_draws_bars():
    """The terminal display: a bar per step, trees for train; robust to odd events."""
    stream = io.StringIO()
    d = Display({"psi": ["a", "b"], "train": ["a", "b"]}, stream=stream, tty=True)
    d.handle(("a", "start", "psi", {"total": None, "unit": None}))
    d.handle(("b", "start", "psi", {"total": None, "unit": None}))
    d.handle(("a", "end", "psi", {"seconds": 0.1, "summary": "10 shared rows"}))
    d.handle(("b", "end", "psi", {"seconds": 0.1, "summary": ""}))
    d.handle(("b", "start", "train", {"total": None, "unit": "trees"}))
    d.handle(("a", "start", "train", {"total": 5, "unit": "trees"}))
    for k in range(6):
        d.handle(("a", "update", "train", {"done": k, "total": 5, "info": {}}))
    d.handle(("b", "update", "train", {"done": 99, "total": None, "info": {}}))  # not the bar's owner
    d.handle(("x", "bogus", "train", {}))
    d.handle(("a", "end", "train", {"seconds": 1.0, "summary": "5 trees"}))
    d.handle(("b", "end", "train", {"seconds": 1.0, "summary": ""}))
    d.close()
    out = stream.getvalue()
    assert "psi" in out and "10 shared rows" in out and "5/5" in out and "5 trees" in out
    assert set(d.seconds) == {"psi", "train"}
