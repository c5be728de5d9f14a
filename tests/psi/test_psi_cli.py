"""``hefl psi``: each party runs the command with its CSV and gets an aligned CSV."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hefl.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _launch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hefl.cli", "psi", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    out = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=90)
            out.append((p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def test_registered() -> None:
    args = build_parser().parse_args(
        ["psi", "--party", "a", "--csv", "x.csv", "--id-column", "id", "--listen", "tcp://127.0.0.1:1",
         "--peer", "b=tcp://127.0.0.1:2", "--out", "o.csv"]
    )
    assert args.command == "psi" and args.peer == [("b", "tcp://127.0.0.1:2")]


def test_three_parties_write_aligned_csvs(tmp_path: Path) -> None:
    data = {
        "bank": pd.DataFrame({"customer_id": ["007", "NA", "c3", "c4", "c5"], "income": [1, 2, 3, 4, 5],
                              "zip": ["01234", "null", "", "7", "00042"],
                              "acct": ["12345678901234567", "1", "2", "3", "9007199254740993"]}),
        "shop": pd.DataFrame({"cid": ["c5", "c4", "007", "NA", "zz"], "spend": [0.5, 0.4, 0.7, 0.9, 0.1]}),
        "telco": pd.DataFrame({"msisdn": ["NA", "c5", "007", "c9"], "calls": [10, 20, 30, 40]}),
    }
    cols = {"bank": "customer_id", "shop": "cid", "telco": "msisdn"}
    ports = dict(zip(data, _free_ports(3)))
    procs = []
    for name, frame in data.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        peers = [f"--peer={p}=tcp://127.0.0.1:{ports[p]}" for p in data if p != name]
        procs.append(_launch([
            "--party", name, "--csv", str(tmp_path / f"{name}.csv"), "--id-column", cols[name],
            "--listen", f"tcp://127.0.0.1:{ports[name]}", *peers,
            "--out", str(tmp_path / f"{name}_aligned.csv"), "--timeout", "60",
        ]))
    results = _finish(procs)
    for rc, so, se in results:
        assert rc == 0, se
        assert "shared" in so
    aligned = {n: pd.read_csv(tmp_path / f"{n}_aligned.csv", dtype={cols[n]: str}, keep_default_na=False)
               for n in data}
    ids = {n: aligned[n][cols[n]].tolist() for n in data}
    assert sorted(ids["bank"]) == ["007", "NA", "c5"]  # leading zeros and "NA" kept as written
    assert ids["bank"] == ids["shop"] == ids["telco"]
    bank = aligned["bank"].set_index("customer_id")["income"].to_dict()
    assert bank == {"007": 1, "NA": 2, "c5": 5}
    # the other columns come out exactly as written too (only rows are selected)
    text = (tmp_path / "bank_aligned.csv").read_text().splitlines()
    assert text[0] == "customer_id,income,zip,acct"
    assert sorted(text[1:]) == ["007,1,01234,12345678901234567", "NA,2,null,1", "c5,5,00042,9007199254740993"]


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,x\n1,2\n1,3\n")
    port_a, port_b = _free_ports(2)
    common = ["--listen", f"tcp://127.0.0.1:{port_a}", "--peer", f"b=tcp://127.0.0.1:{port_b}",
              "--out", str(tmp_path / "o.csv"), "--connect-timeout", "1"]
    (rc, _, se), = _finish([_launch(["--party", "a", "--csv", str(tmp_path / "a.csv"),
                                     "--id-column", "nope", *common])])
    assert rc == 1 and "ID column 'nope'" in se
    (rc, _, se), = _finish([_launch(["--party", "a", "--csv", str(tmp_path / "a.csv"),
                                     "--id-column", "id", *common])])
    assert rc == 1 and "DataError: 1 duplicate ID" in se  # before waiting for any peer
    (rc, _, se), = _finish([_launch(["--party", "a", "--csv", str(tmp_path / "a.csv"),
                                     "--id-column", "x", *common])])
    assert rc == 1 and "TimeoutError" in se  # peer b never came up


@pytest.mark.parametrize("extra, match", [
    (["--peer", "a=tcp://127.0.0.1:9"], "itself"),
    (["--curve-secret-key", "k"], "go together"),
    # checked before waiting for any peer (the peer here never comes up)
    (["--sep", "\\t"], "--sep must be one character"),
    (["--batch-size", "0"], "--batch-size must be in"),
    (["--n-jobs", "0"], "n_jobs must be a non-zero integer"),
    (["--leader", "nobody"], "--leader 'nobody' is neither this party nor a --peer"),
])
def test_bad_options(tmp_path: Path, extra: list[str], match: str) -> None:
    (tmp_path / "a.csv").write_text("id\n1\n")
    (rc, _, se), = _finish([_launch([
        "--party", "a", "--csv", str(tmp_path / "a.csv"), "--id-column", "id",
        "--listen", "tcp://127.0.0.1:9", "--peer", "b=tcp://127.0.0.1:10", "--out", "o.csv", *extra,
    ])])
    assert rc == 1 and match in se
