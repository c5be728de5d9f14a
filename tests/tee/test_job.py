"""The ``tee`` section of a job: the example config validates, a small job runs through
the attested aggregator and its audit log verifies (also with the parties' heads),
tampering is caught by ``hefl audit verify``, and bad tee sections are config errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from hefl.cli import main
from hefl.errors import ConfigError
from hefl.jobs import load_job, run_job

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
LR_OPS = ["lr.setup", "lr.encrypt_zero", "lr.open_gradient", "lr.loss"]


@pytest.fixture(autouse=True)
def _quiet():
    names = ["hefl.he.mock", "hefl.tee.attestation"]
    old = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    yield
    for n, lv in zip(names, old):
        logging.getLogger(n).setLevel(lv)


def tee_job(out: Path, **tee) -> dict:
    return {
        "name": "tee_small", "seed": 2,
        "parties": {
            "guest": {"role": "active", "data": {"path": str(DATA / "breast_hetero_guest.csv"),
                                                 "id_column": "id", "label_column": "y"}},
            "host": {"role": "passive", "data": {"path": str(DATA / "breast_hetero_host.csv"), "id_column": "id"}},
            "arbiter": {"role": "arbiter"},
        },
        "he": {"scheme": "mock", "allow_insecure": True},
        "tee": {"policies": {"guest": {"allow": LR_OPS, "max_rounds": 5},
                             "host": {"allow": LR_OPS}}, **tee},
        "steps": [{"psi": {}},
                  {"train": {"model": "hetero_lr", "task": "binary",
                             "params": {"max_iter": 2, "batch_size": 256, "tol": None}}},
                  {"evaluate": {"test_size": 0.2}}],
        "output": str(out),
        "timeouts": {"recv": 60, "connect": 30, "job": 120, "heartbeat": 5},
    }


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_example_config_validates():
    job = load_job(REPO / "configs" / "tee_lr.yaml")
    assert job.config.tee is not None and job.arbiter == "arbiter"
    assert job.config.he.key_size == 2048 and job.config.he.scheme == "paillier"


def test_job_runs_through_the_tee_and_its_log_verifies(tmp_path, capsys):
    job = load_job(_write(tmp_path, tee_job(tmp_path / "out")))
    res = run_job(job, progress=False)
    assert res.parties["guest"]["metrics"]["test"]["auc"] > 0.9
    log = tmp_path / "out" / "arbiter" / "audit.jsonl"
    heads = tmp_path / "out" / "guest" / "tee_heads.json"
    doc = json.loads(heads.read_text())
    assert doc["claims"]["provider"] == "simulated" and len(doc["heads"]) == 3  # 2 epochs + final
    assert main(["audit", "verify", str(log), "--heads", str(heads),
                 "--heads", str(tmp_path / "out" / "host" / "tee_heads.json")]) == 0
    assert "6 received head(s) match" in capsys.readouterr().out  # 3 per data party
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:5] + lines[6:]))  # remove one entry
    assert main(["audit", "verify", str(log), "-q"]) == 1
    assert "entry 5" in capsys.readouterr().out


def test_policy_refusal_fails_the_job_in_a_data_party(tmp_path):
    from hefl.errors import PolicyError
    from hefl.jobs.runner import PartyFailed

    doc = tee_job(tmp_path / "out")
    doc["tee"]["policies"]["guest"]["max_rounds"] = 1
    with pytest.raises(PartyFailed) as ei:
        run_job(load_job(_write(tmp_path, doc)), progress=False)
    assert isinstance(ei.value.error, PolicyError)
    assert ei.value.party in ("guest", "host") and ei.value.step == "train"
    assert main(["audit", "verify", str(tmp_path / "out" / "arbiter" / "audit.jsonl"), "-q"]) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["tee"]["policies"].pop("host"), "no data-use policy for party 'host'"),
    (lambda d: d["tee"]["policies"]["guest"].update(allow=["lr.read_raw"]), "unknown operation 'lr.read_raw'"),
    (lambda d: d["parties"].pop("arbiter"), "needs a party with role: arbiter"),
    (lambda d: d["tee"].update(allowed_measurements=["abc"]), "neither 'local' nor 64 hex"),
    (lambda d: d["tee"].update(trusted_root="zz"), "64 hex digits"),
])
def test_bad_tee_sections_are_config_errors(tmp_path, edit, message):
    doc = tee_job(tmp_path / "out")
    edit(doc)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_job(_write(tmp_path, doc))


def test_measure_cli(capsys):
    assert main(["tee", "measure", str(REPO / "configs" / "tee_lr.yaml")]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out) == 64 and int(out, 16) >= 0
