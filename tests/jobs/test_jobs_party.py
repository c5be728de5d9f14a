"""``hefl run JOB --party NAME``: one process per party, as on two hosts, over CurveZMQ."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from jobhelpers import TEST_DATA, free_ports, wait_no_pids, write_yaml

from hefl.jobs import load_job, run_job
from hefl.transport.curve import write_keypair

HEFL = [sys.executable, "-m", "hefl.cli"]


def _two_host_job(tmp_path, job_doc) -> tuple[dict, str]:
    keys = tmp_path / "keys"
    write_keypair(keys, "guest")
    write_keypair(keys, "host")
    ports = free_ports(2)
    for name, port in zip(("guest", "host"), ports):
        p = job_doc["parties"][name]
        p["address"] = f"tcp://127.0.0.1:{port}"
        p["curve_public_key"] = f"keys/{name}.key"        # relative to the YAML file
        p["curve_secret_key"] = f"keys/{name}.key_secret"
    job_doc["steps"].append({"predict": {"data": {
        "guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv")},
        "host": {"path": str(TEST_DATA / "breast_hetero_host.csv")}}}})
    return job_doc, str(write_yaml(tmp_path / "two-hosts.yaml", job_doc))


def _start(path: str, party: str, out) -> subprocess.Popen:
    return subprocess.Popen([*HEFL, "run", path, "--party", party, "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: dict[str, subprocess.Popen], timeout: float = 120.0) -> dict[str, tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    done = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done[name] = (p.returncode, out, err)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def _strip(model: dict) -> dict:
    model = dict(model)
    model.pop("timings", None)
    return model


def test_party_mode_gives_the_embedded_model(tmp_path, job_doc):
    _, path = _two_host_job(tmp_path, job_doc)
    # the embedded run (fresh loopback keys; the key files are not needed)
    emb = run_job(load_job(path, output=tmp_path / "embedded"), progress=False)
    assert emb.parties["guest"]["metrics"]["test"]["auc"] > 0.9

    # two "terminals": the host starts first and waits for the guest
    procs = {"host": _start(path, "host", tmp_path / "party"), "guest": _start(path, "guest", tmp_path / "party")}
    res = _finish(procs)
    for name, (rc, out, err) in res.items():
        assert rc == 0, f"{name}: {out}\n{err}"
    assert "hefl run small: done in" in res["guest"][1]
    assert "CurveZMQ on" in res["guest"][2]
    for name in ("guest", "host"):
        log = (tmp_path / "party" / name / "party.log").read_text()
        assert "CurveZMQ on" in log
        a = json.loads((tmp_path / "embedded" / name / "model.json").read_text())
        b = json.loads((tmp_path / "party" / name / "model.json").read_text())
        assert _strip(a) == _strip(b), f"{name}'s model differs between the embedded and the --party run"
    ma = json.loads((tmp_path / "embedded" / "guest" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "party" / "guest" / "metrics.json").read_text())
    assert ma["evaluation"] == mb["evaluation"]
    pa = pd.read_csv(tmp_path / "embedded" / "guest" / "predictions.csv")
    pb = pd.read_csv(tmp_path / "party" / "guest" / "predictions.csv")
    pd.testing.assert_frame_equal(pa, pb)
    # each host wrote only its own party's outputs
    assert not (tmp_path / "party" / "host" / "predictions.csv").exists()
    assert wait_no_pids(path) == []


@pytest.mark.parametrize("party", ["guest", "host"])
def test_party_mode_checks_its_own_files_only(tmp_path, job_doc, party):
    doc, path = _two_host_job(tmp_path, job_doc)
    other = "host" if party == "guest" else "guest"
    doc["parties"][other]["data"]["path"] = str(tmp_path / "not-on-this-host.csv")
    (tmp_path / "keys" / f"{other}.key_secret").unlink()
    write_yaml(tmp_path / "two-hosts.yaml", doc)
    load_job(path, party=party)  # the other party's data and secret key live on its own host
