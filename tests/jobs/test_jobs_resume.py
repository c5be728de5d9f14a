"""``hefl run --resume``: a job killed during training continues from the last shared
checkpoint and ends with the model of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from jobhelpers import write_yaml

from hefl.jobs import PartyFailed, load_job, run_job
from hefl.models.secureboost import _federated

HEFL = [sys.executable, "-m", "hefl"]


@pytest.fixture
def fixed_permutations(monkeypatch):
    """The passive party's feature permutations from a fixed (test) secret, so that two
    fresh runs break exact gain ties alike and can be compared tree by tree."""
    orig = _federated.PassiveParty.__init__

    def init(self, *a, **kw):
        kw.setdefault("permutation_seed", 1234)
        orig(self, *a, **kw)

    monkeypatch.setattr(_federated.PassiveParty, "__init__", init)


def _kill_passive_at(monkeypatch, round_: int):
    """SIGKILL the passive party's process when it is told to save tree ``round_``."""
    orig = _federated.PassiveParty._checkpoint

    def dying(self, cmd, tag):
        if cmd.get("round") == round_:
            os.kill(os.getpid(), signal.SIGKILL)
        orig(self, cmd, tag)

    monkeypatch.setattr(_federated.PassiveParty, "_checkpoint", dying)
    return lambda: monkeypatch.setattr(_federated.PassiveParty, "_checkpoint", orig)


def _models(out):
    return (json.loads((out / "guest" / "model.json").read_text()),
            json.loads((out / "host" / "model.json").read_text()))


def test_resume_after_a_killed_party_gives_the_uninterrupted_model(tmp_path, job_doc, monkeypatch,
                                                                    fixed_permutations):
    job_doc["steps"][1]["train"]["params"].update(n_estimators=6, subsample=0.8, colsample_bytree=0.8)
    job_doc["timeouts"]["heartbeat"] = 3
    job_doc["output"] = str(tmp_path / "ref")
    ref_path = write_yaml(tmp_path / "ref.yaml", job_doc)
    run_job(load_job(ref_path), progress=False)
    ref = _models(tmp_path / "ref")

    job_doc["output"] = str(tmp_path / "run")
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    restore = _kill_passive_at(monkeypatch, 4)
    with pytest.raises(PartyFailed):
        run_job(load_job(path), progress=False)
    restore()
    host_ck = sorted(p.name for p in (tmp_path / "run" / "host" / "checkpoints" / "train").iterdir())
    assert host_ck == ["ckpt-000001.npz", "ckpt-000002.npz", "ckpt-000003.npz"]
    assert not (tmp_path / "run" / "guest" / "model.json").exists()

    res = run_job(load_job(path), progress=False, resume=True)
    got = _models(tmp_path / "run")
    assert got[0]["trees"] == ref[0]["trees"] and got[1]["splits"] == ref[1]["splits"]
    assert res.parties["guest"]["metrics"] == json.loads(
        (tmp_path / "ref" / "guest" / "metrics.json").read_text())["evaluation"]
    log = (tmp_path / "run" / "guest" / "party.log").read_text()
    assert "resuming" in log and "after tree 3 (the newest every party has)" in log
    assert log.count("job small (") == 2  # the killed run's log is kept: a resumed run appends


def test_resume_without_checkpoints_trains_from_the_start(tmp_path, job_doc):
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    proc = subprocess.run([*HEFL, "run", str(path), "--resume", "-q"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "out" / "guest" / "party.log").read_text()
    assert "no checkpoint that every party holds" in log
    assert len(json.loads((tmp_path / "out" / "guest" / "model.json").read_text())["trees"]) == 3


def test_a_fresh_run_discards_old_checkpoints(tmp_path, job_doc):
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    run_job(load_job(path), progress=False)
    ck = tmp_path / "out" / "host" / "checkpoints" / "train"
    first = {p.name: p.read_bytes() for p in ck.iterdir()}
    run_job(load_job(path), progress=False)  # not --resume: a new run id, new files
    second = {p.name: p.read_bytes() for p in ck.iterdir()}
    assert first.keys() == second.keys() and all(first[k] != second[k] for k in first)


@pytest.mark.parametrize("protocol, victim", [("two_party", "host"), ("arbiter", "arbiter")])
def test_hetero_lr_resume_after_a_killed_party_gives_the_uninterrupted_model(tmp_path, job_doc, monkeypatch,
                                                                             protocol, victim):
    from hefl import checkpoint
    from hefl.jobs._models import unavailable_reason

    if unavailable_reason("hetero_lr"):
        pytest.skip(unavailable_reason("hetero_lr"))
    job_doc["steps"][1] = {"train": {"model": "hetero_lr", "params": {"max_iter": 4, "batch_size": 128}}}
    if protocol == "arbiter":
        job_doc["parties"]["arbiter"] = {"role": "arbiter"}
    job_doc["timeouts"]["heartbeat"] = 3
    job_doc["output"] = str(tmp_path / "ref")
    run_job(load_job(write_yaml(tmp_path / "ref.yaml", job_doc)), progress=False)
    ref = _models(tmp_path / "ref")

    job_doc["output"] = str(tmp_path / "run")
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    orig = checkpoint.Checkpointer.save

    def dying(self, step, *a, **kw):  # SIGKILL the victim's process as it is about to save epoch 3
        if step == 3 and self.directory.parts[-3] == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, step, *a, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", dying)
    with pytest.raises(PartyFailed):
        run_job(load_job(path), progress=False)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", orig)
    ck = sorted(p.name for p in (tmp_path / "run" / victim / "checkpoints" / "train").iterdir())
    assert ck == ["ckpt-000001.npz", "ckpt-000002.npz"]
    assert not (tmp_path / "run" / "guest" / "model.json").exists()

    res = run_job(load_job(path), progress=False, resume=True)
    got = _models(tmp_path / "run")
    for k in ("coef", "intercept", "n_iter", "loss_curve"):
        assert got[0][k] == ref[0][k], k
    assert got[1]["coef"] == ref[1]["coef"]
    if protocol == "arbiter":
        arb = [json.loads((tmp_path / d / "arbiter" / "model.json").read_text()) for d in ("run", "ref")]
        assert arb[0]["loss_curve"] == arb[1]["loss_curve"] and len(arb[0]["loss_curve"][0]) == 4
    assert res.parties["guest"]["metrics"] == json.loads(
        (tmp_path / "ref" / "guest" / "metrics.json").read_text())["evaluation"]
    log = (tmp_path / "run" / "guest" / "party.log").read_text()
    assert "after epoch 2 (the newest every party has)" in log
