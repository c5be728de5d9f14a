"""Helpers for the job-runner tests: small jobs on the breast data, written to tmp dirs."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def small_job(out: Path | str = "out") -> dict:
    """Two parties, mock HE, PSI + 3 shallow trees + evaluate: a fast runner test."""
    return {
        "name": "small",
        "seed": 3,
        "parties": {
            "guest": {"role": "active",
                      "data": {"path": str(TEST_DATA / "breast_hetero_guest.csv"), "id_column": "id",
                               "label_column": "y"}},
            "host": {"role": "passive",
                     "data": {"path": str(TEST_DATA / "breast_hetero_host.csv"), "id_column": "id"}},
        },
        "he": {"scheme": "mock", "allow_insecure": True},
        "steps": [
            {"psi": {}},
            {"train": {"model": "secureboost", "params": {"n_estimators": 3, "max_depth": 2}}},
            {"evaluate": {"test_size": 0.25}},
        ],
        "output": str(out),
        "timeouts": {"recv": 60, "connect": 30, "job": 120, "heartbeat": 5},
    }


def write_yaml(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def pids_with(text: str) -> list[int]:
    """Processes (other than this one) whose command line contains ``text``."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{e}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state not in (b"Z", b"X"):
            out.append(int(e))
    return out


def wait_no_pids(text: str, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    left = pids_with(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = pids_with(text)
    return left
