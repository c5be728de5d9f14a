"""The audit log: a fresh log verifies; editing, removing, inserting or reordering any
entry, truncating it, or forging a re-hashed entry is detected (also by the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hefl.cli import main
from hefl.tee import AuditLog, digest, verify_log

N = 8


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append(who="arbiter", op="audit.open", outputs={"log_key": log.public_key})
        for i in range(N - 2):
            log.append(who="guest" if i % 2 else "host", op="lr.open_gradient", direction="in",
                       inputs={f"p0/e{i}/b0/g": digest(np.arange(i + 3.0))})
        log.append(who="arbiter", op="audit.close")
    return path


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def _write(path, lines):
    path.write_bytes(b"".join(lines))


def test_fresh_log_verifies(logfile):
    res = verify_log(logfile)
    assert res.ok, res.error
    assert len(res.entries) == N and res.closed
    assert res.head["hash"] == res.entries[-1]["hash"]


def test_digest_is_of_the_payload():
    a = np.arange(4.0)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a + 1)
    assert digest({"x": b"1"}) != digest({"x": b"2"})


@pytest.mark.parametrize("i", range(N))
def test_editing_any_entry_is_detected(logfile, i):
    lines = _lines(logfile)
    e = json.loads(lines[i])
    e["who"] = e["who"] + "x"
    lines[i] = (json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n").encode()
    _write(logfile, lines)
    res = verify_log(logfile)
    assert not res.ok and res.broken_seq == i, res.error
    assert f"entry {i}" in res.error


@pytest.mark.parametrize("i", range(N))
def test_removing_any_entry_is_detected(logfile, i):
    lines = _lines(logfile)
    del lines[i]
    _write(logfile, lines)
    res = verify_log(logfile)
    assert not res.ok
    # the entry after the gap (or, for the last one, the missing close) is named
    assert res.broken_seq == i, res.error


@pytest.mark.parametrize("i", range(N - 1))
def test_swapping_neighbours_is_detected(logfile, i):
    lines = _lines(logfile)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    _write(logfile, lines)
    res = verify_log(logfile)
    assert not res.ok and res.broken_seq == i, res.error


def test_duplicated_entry_is_detected(logfile):
    lines = _lines(logfile)
    lines.insert(3, lines[3])
    _write(logfile, lines)
    res = verify_log(logfile)
    assert not res.ok and res.broken_seq == 4, res.error


def test_rehashed_forgery_fails_the_signature(logfile):
    """Recomputing the hash chain after an edit is not enough: the log key signs each hash."""
    import hashlib

    from hefl.tee.attestation import canonical_json

    lines = _lines(logfile)
    entries = [json.loads(x) for x in lines]
    entries[2]["note"] = "nothing happened here"
    prev = entries[1]["hash"]
    for e in entries[2:]:
        e["prev"] = prev
        e["hash"] = hashlib.sha256(canonical_json({k: v for k, v in e.items()
                                                   if k not in ("hash", "sig")})).hexdigest()
        prev = e["hash"]
    _write(logfile, [(json.dumps(e) + "\n").encode() for e in entries])
    res = verify_log(logfile)
    assert not res.ok and res.broken_seq == 2 and "signature" in res.error


def test_truncation_is_detected_unless_allowed(logfile):
    lines = _lines(logfile)
    _write(logfile, lines[:-2])
    res = verify_log(logfile)
    assert not res.ok and "truncated" in res.error
    assert verify_log(logfile, require_close=False).ok


def test_received_heads_are_checked(logfile):
    res = verify_log(logfile)
    heads = [{"seq": 3, "hash": res.entries[2]["hash"]}, res.head]
    assert verify_log(logfile, heads=heads).ok
    assert not verify_log(logfile, heads=[{"seq": 3, "hash": "0" * 64}]).ok
    assert not verify_log(logfile, heads=[{"seq": N + 1, "hash": "0" * 64}]).ok


def test_cli_verify(logfile, capsys):
    assert main(["audit", "verify", str(logfile)]) == 0
    out = capsys.readouterr().out
    assert "lr.open_gradient" in out and out.strip().splitlines()[-1].startswith("OK")
    # the acceptance script's tampering: one alphanumeric byte in the middle
    b = bytearray(logfile.read_bytes())
    i = len(b) // 2
    while not chr(b[i]).isalnum():
        i += 1
    b[i] = ord("0") if b[i] != ord("0") else ord("1")
    logfile.write_bytes(bytes(b))
    assert main(["audit", "verify", str(logfile)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAILED") and "entry" in last


def test_every_single_alphanumeric_flip_is_detected(logfile):
    """The acceptance check's tampering at every position, not just the middle."""
    orig = logfile.read_bytes()
    for i, c in enumerate(orig):
        if not chr(c).isalnum():
            continue
        b = bytearray(orig)
        b[i] = ord("0") if c != ord("0") else ord("1")
        logfile.write_bytes(bytes(b))
        assert not verify_log(logfile).ok, f"flip at byte {i} ({chr(c)!r}) not detected"


def test_an_earlier_runs_log_is_kept_not_truncated(logfile):
    before = logfile.read_bytes()
    with AuditLog(logfile) as log:  # a resumed run writes its own log at the same path
        log.append(who="arbiter", op="audit.open", outputs={"log_key": log.public_key})
        assert log.previous == logfile.with_name("audit.1.jsonl")
    assert logfile.with_name("audit.1.jsonl").read_bytes() == before
    with AuditLog(logfile) as log:
        assert log.previous == logfile.with_name("audit.2.jsonl")


def test_a_re_signed_log_fails_against_the_attested_key(logfile, tmp_path, capsys):
    attested = verify_log(logfile).log_key
    forged = tmp_path / "forged.jsonl"
    with AuditLog(forged) as log:  # rewritten and signed with a fresh key
        log.append(who="arbiter", op="audit.open", outputs={"log_key": log.public_key})
        log.append(who="arbiter", op="audit.close")
    assert verify_log(forged).ok  # consistent with the key it names itself …
    res = verify_log(forged, log_key=attested)  # … not with the attested one
    assert not res.ok and "re-signed" in res.error
    heads = tmp_path / "tee_heads.json"
    heads.write_text(json.dumps({"claims": {"log_key": attested}, "heads": []}))
    assert main(["audit", "verify", str(forged), "--heads", str(heads), "-q"]) == 1
    assert main(["audit", "verify", str(logfile), "--heads", str(heads), "-q"]) == 0
    assert "signed by the attested log key" in capsys.readouterr().out
    assert main(["audit", "verify", str(logfile), "-q"]) == 0
    assert "no attested log key given" in capsys.readouterr().out
    heads.write_text(json.dumps({"heads": [[5, "abc"]]}))  # malformed: a clear exit 2
    assert main(["audit", "verify", str(logfile), "--heads", str(heads)]) == 2
