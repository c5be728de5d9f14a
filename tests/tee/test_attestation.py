"""Quotes: a good one verifies; wrong signature, unknown measurement, stale nonce or
quote, and a channel key other than the pinned one are rejected."""

from __future__ import annotations

import json
import time

import pytest

from hefl.tee import AttestationError, Quote, SimulatedProvider, measure, new_nonce, verify_quote
from hefl.tee.attestation import canonical_json

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a Z85 CURVE public key (40 chars)
OTHER_KEY = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"


@pytest.fixture(scope="module")
def provider():
    return SimulatedProvider()


@pytest.fixture(scope="module")
def meas():
    return measure({"service": "test"})


def _check(q, provider, meas, nonce, **kw):
    args = {"root": provider.root(), "allowed": [meas], "nonce": nonce, "channel_key": KEY}
    args.update(kw)
    return verify_quote(q, **args)


def test_good_quote_verifies_and_binds_everything(provider, meas):
    n = new_nonce()
    q = provider.quote(measurement=meas, channel_key=KEY, nonce=n, log_key="ab" * 32)
    claims = _check(Quote.from_wire(q.to_wire()), provider, meas, n)
    assert claims["measurement"] == meas and claims["channel_key"] == KEY
    assert claims["nonce"] == n.hex() and claims["provider"] == "simulated"


def test_measurement_depends_on_code_and_config(tmp_path, meas):
    assert measure({"service": "test"}) == meas
    assert measure({"service": "other"}) != meas
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    m1 = measure({}, root=tmp_path, packages=["pkg"])
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert measure({}, root=tmp_path, packages=["pkg"]) != m1


def test_wrong_signature_is_rejected(provider, meas):
    n = new_nonce()
    impostor = SimulatedProvider()  # a key the verifier does not trust
    q = impostor.quote(measurement=meas, channel_key=KEY, nonce=n)
    with pytest.raises(AttestationError, match="signature"):
        _check(q, provider, meas, n)
    good = provider.quote(measurement=meas, channel_key=KEY, nonce=n)
    bad_sig = bytes([good.evidence[0] ^ 1]) + good.evidence[1:]
    with pytest.raises(AttestationError, match="signature"):
        _check(Quote(good.body, bad_sig), provider, meas, n)
    # a body edited after signing (e.g. to claim an allowed measurement) fails too
    claims = json.loads(good.body)
    claims["channel_key"] = OTHER_KEY
    with pytest.raises(AttestationError, match="signature"):
        _check(Quote(canonical_json(claims), good.evidence), provider, meas, n, channel_key=OTHER_KEY)


def test_unknown_measurement_is_rejected(provider, meas):
    n = new_nonce()
    q = provider.quote(measurement=measure({"service": "patched"}), channel_key=KEY, nonce=n)
    with pytest.raises(AttestationError, match="allow-list"):
        _check(q, provider, meas, n)


def test_stale_nonce_and_old_quote_are_rejected(provider, meas):
    old_nonce, n = new_nonce(), new_nonce()
    replay = provider.quote(measurement=meas, channel_key=KEY, nonce=old_nonce)
    with pytest.raises(AttestationError, match="nonce"):
        _check(replay, provider, meas, n)
    # right nonce but issued long ago (re-signed to isolate the age check)
    claims = json.loads(provider.quote(measurement=meas, channel_key=KEY, nonce=n).body)
    claims["issued_at"] = time.time() - 3600
    body = canonical_json(claims)
    import hashlib

    aged = Quote(body, provider.evidence(hashlib.sha512(body).digest()))
    with pytest.raises(AttestationError, match="stale"):
        _check(aged, provider, meas, n, max_age=60)


def test_key_not_matching_the_channel_is_rejected(provider, meas):
    n = new_nonce()
    q = provider.quote(measurement=meas, channel_key=OTHER_KEY, nonce=n)
    with pytest.raises(AttestationError, match="channel key"):
        _check(q, provider, meas, n)


def test_malformed_quotes_are_rejected(provider, meas):
    with pytest.raises(AttestationError):
        Quote.from_wire({"body": "text", "evidence": b""})
    with pytest.raises(AttestationError, match="keys"):
        _check(Quote(b'{"v":1}', b""), provider, meas, new_nonce())
    claims = json.loads(provider.quote(measurement=meas, channel_key=KEY, nonce=new_nonce()).body)
    claims["provider"] = "sgx-nonexistent"
    with pytest.raises(AttestationError, match="unknown attestation provider"):
        _check(Quote(canonical_json(claims), b"x"), provider, meas, bytes.fromhex(claims["nonce"]))


def test_measurement_covers_native_extensions_and_refuses_unchecked_bytecode(tmp_path):
    import importlib.machinery
    import importlib.util

    from hefl.tee.attestation import measure as measure_code

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    ext = pkg / f"_fast{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    ext.write_bytes(b"\x7fELF one")
    (pkg / "notes.txt").write_text("not code")
    m1 = measure_code({}, root=tmp_path, packages=["pkg"])
    (pkg / "notes.txt").write_text("still not code")
    assert measure_code({}, root=tmp_path, packages=["pkg"]) == m1
    ext.write_bytes(b"\x7fELF two")  # the secret-key arithmetic lives in extensions
    assert measure_code({}, root=tmp_path, packages=["pkg"]) != m1
    (pkg / "sub" / "k.cu").write_text("// kernel")
    assert measure_code({}, root=tmp_path, packages=["pkg"]) != m1
    # an unchecked hash-based .pyc runs without its (measured) source
    (pkg / "__pycache__").mkdir()
    magic = importlib.util.MAGIC_NUMBER
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(magic + (1).to_bytes(4, "little") + b"\0" * 8)
    with pytest.raises(AttestationError, match="unchecked hash-based bytecode cache"):
        measure_code({}, root=tmp_path, packages=["pkg"])
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(magic + (3).to_bytes(4, "little") + b"\0" * 8)
    measure_code({}, root=tmp_path, packages=["pkg"])  # a checked one is fine
