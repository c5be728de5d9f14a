"""Bad input, as a user (or a misbehaving peer) would send it: each gets an error from hefl's
tree whose message names what was wrong -- the peer and tag, the field, the column, the file,
the YAML key, the value -- and nothing is executed, overwritten or lost.

What tests/transport and tests/he already cover (every malformed-frame kind at the decoder,
``ProtocolError`` types through a raw socket, kit validation types) is not repeated here; this
file adds the end-user view: the message text, a pickle that would create a file, limits
through a real ``ZmqChannel``, one peer unable to take a channel down, kits with a corrupted
modulus, the job runner and the scikit-learn estimators.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zmq

from hefl.errors import (
    ConfigError,
    DataError,
    InsecureKeyError,
    InvalidCiphertextError,
    KeyMismatchError,
    ProtocolError,
)
from hefl.he import ou, paillier
from hefl.he import wire as he_wire
from hefl.he.base import MAX_KEY_BITS
from hefl.jobs import JobConfigError, PartyFailed, load_job, run_job
from hefl.transport import ZmqChannel, wire

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobhelpers import TEST_DATA, free_ports, small_job, write_yaml

FAST = {"heartbeat_interval": 0.1, "heartbeat_timeout": 2.0, "linger": 1.0}


# ============================================================================ a pickle that would act


class _Touch:
    """Unpickling this creates ``path`` (what a malicious payload would do, harmlessly)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker))


def test_the_evil_pickle_does_act_when_unpickled(tmp_path):
    """Control: the payload below really would create its file, so its absence means something."""
    marker = tmp_path / "control"
    pickle.loads(evil_pickle(marker)).close()
    assert marker.exists()


def _msg(body: dict, frames: list[bytes], **extra) -> list[bytes]:
    h = {"v": 1, "src": "bob", "kind": "msg", "tag": "x", "body": body, "sizes": [len(f) for f in frames]}
    h.update(extra)
    return [json.dumps(h).encode(), *frames]


def _decode(parts: list[bytes], kits=None, limit: int = 2**32):
    header = wire.parse_header(parts[0])
    frames = [bytearray(p) for p in parts[1:]]
    wire.check_frames(header, frames, limit)
    return wire.decode_payload(header["body"], frames, kits=kits or {}, peer="bob", tag=header.get("tag"))


def _pickle_cases(evil: bytes) -> dict[str, tuple[list[bytes], str]]:
    """A pickle in every place of a message, and what the rejection must say."""
    return {
        "header": ([evil], "header is not valid UTF-8 JSON"),
        "pickle_kind": (_msg({"k": "pickle", "f": 0}, [evil]), "unknown payload kind 'pickle'"),
        "json_payload": (_msg({"k": "json", "f": 0}, [evil]), "json payload is not valid UTF-8 JSON"),
        "object_array": (_msg({"k": "nd", "f": 0, "dtype": "|O8", "shape": [1]}, [evil]),
                         "array dtype '|O8' is not a plain numeric dtype"),
        "kit": (_msg({"k": "kit", "f": 0}, [evil]), "invalid public kit"),
        "cipher": (_msg({"k": "cipher", "f": [0], "meta": {"fingerprint": "ab" * 16, "scheme": "paillier"}},
                        [evil]), "not registered"),
    }


@pytest.mark.parametrize("where", ["header", "pickle_kind", "json_payload", "object_array", "kit", "cipher"])
def test_pickle_anywhere_in_a_message_is_rejected_unexecuted(tmp_path, where):
    marker = tmp_path / "pwned"
    parts, says = _pickle_cases(evil_pickle(marker))[where]
    with pytest.raises(ProtocolError, match=says):
        _decode(parts)
    assert not marker.exists()


def test_pickle_sent_as_bytes_arrives_as_inert_bytes(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_pickle(marker)
    assert _decode(_msg({"k": "bytes", "f": 0}, [evil])) == evil
    assert not marker.exists()


# ============================================================================ wire messages name the fault


@pytest.mark.parametrize("parts, says", [
    (_msg({"k": "nd", "f": 0, "dtype": "<f8", "shape": [4]}, [b"\0" * 20], sizes=[32]),
     r"frame 0 has 20 bytes, header announces 32 \(truncated or padded\)"),
    (_msg({"k": "nd", "f": 0, "dtype": "<f8", "shape": [4]}, []) + [b"\0" * 32],
     r"message has 1 payload frames, header announces 0"),
    (_msg({"k": "nd", "f": 0, "dtype": "<f8", "shape": [5]}, [b"\0" * 32]),
     r"array of shape \(5,\) and dtype <f8 needs 40 bytes, frame has 32"),
    (_msg({"k": "bytes", "f": 0}, [b"x"], v=7), r"unsupported protocol version 7"),
    (_msg({"k": "bytes", "f": 0}, [b"x"], tag="../../etc/passwd"), r"invalid tag '\.\./\.\./etc/passwd'"),
    (_msg({"k": "bytes", "f": 0}, [b"x"], src="mallory evil"), r"invalid sender name 'mallory evil'"),
    (_msg({"k": "bytes", "f": 0}, [b"x"], kind=["msg"]), r"message kind \"\['msg'\]\" is not a string"),
    (_msg({"k": "nd", "f": 0, "dtype": "<f8", "shape": [0, 2**62, 2**62]}, [b""]),
     r"array shape \[0, 4611686018427387904, 4611686018427387904\] is too large"),
    (_msg({"k": "list", "items": [{"k": "bytes", "f": 0}]}, [b"a", b"b"]),
     r"frames \[1\] are not referenced"),
], ids=["truncated", "extra_frame", "array_size", "version", "tag_path", "sender", "kind_list", "huge_empty_array",
        "unreferenced_frame"])
def test_malformed_message_errors_name_the_fault(parts, says):
    with pytest.raises(ProtocolError, match=says) as info:
        _decode(parts)
    assert isinstance(info.value, ProtocolError)  # the documented type, also before peer/tag are known


def test_oversized_message_names_size_and_limit():
    header, frames, _ = wire.build_message("bob", "x", np.zeros(1000))
    with pytest.raises(ProtocolError, match=r"message of 8000 bytes exceeds the limit of 4096"):
        _decode([header, *[memoryview(f).tobytes() for f in frames]], limit=4096)


# ============================================================================ through a real ZmqChannel


def _raw_peer(channel: ZmqChannel, name: str):
    zctx = zmq.Context()
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.IDENTITY, name.encode())
    raw.linger = 0
    raw.connect(channel.bound_address)
    raw.send(wire.control_header(name, "hello"))
    return zctx, raw


@pytest.fixture
def alice_bob_carol():
    """alice (real channel); bob a raw socket we control; carol a real, well-behaved peer."""
    # bob (raw) answers no heartbeats: a long heartbeat timeout keeps him "alive" during a test
    alice = ZmqChannel("alice", ["bob", "carol"], recv_timeout=10, **dict(FAST, heartbeat_timeout=60.0))
    carol = ZmqChannel("carol", ["alice"], recv_timeout=10, **FAST)
    nobody = f"tcp://127.0.0.1:{free_ports(1)[0]}"  # bob's own socket: never listened on
    alice.connect({"carol": carol.bound_address, "bob": nobody})
    carol.connect({"alice": alice.bound_address})
    zctx, raw = _raw_peer(alice, "bob")
    alice.wait_ready(10)
    carol.wait_ready(10)
    yield alice, raw, carol
    raw.close(0)
    zctx.term()
    alice.close(linger=0)
    carol.close(linger=0)


@pytest.mark.parametrize("where", ["header", "pickle_kind", "json_payload", "object_array", "kit"])
def test_pickle_through_zmq_is_rejected_unexecuted(tmp_path, alice_bob_carol, where):
    alice, raw, _ = alice_bob_carol
    marker = tmp_path / "pwned"
    parts, says = _pickle_cases(evil_pickle(marker))[where]
    if where == "header":
        parts = [parts[0], b"payload"]
    raw.send_multipart(parts)
    with pytest.raises(ProtocolError, match=says) as info:
        alice.recv("bob", "x", timeout=5)
    assert (info.value.peer, info.value.tag) == ("bob", "x")
    assert not marker.exists()


def test_one_bad_peer_cannot_take_the_channel_down(alice_bob_carol):
    """An unhashable message kind used to raise TypeError in the I/O thread, which then marked
    every peer lost; now bob alone is refused and alice goes on with carol."""
    alice, raw, carol = alice_bob_carol
    raw.send_multipart(_msg({"k": "bytes", "f": 0}, [b"x"], kind=[]))
    with pytest.raises(ProtocolError, match=r"message kind '\[\]' is not a string") as info:
        alice.recv("bob", "x", timeout=5)
    assert info.value.peer == "bob"
    carol.send("alice", "still-there", {"ok": 1})
    assert alice.recv("carol", "still-there", timeout=5) == {"ok": 1}
    alice.send("carol", "reply", b"fine")
    assert carol.recv("alice", "reply", timeout=5) == b"fine"


def test_message_over_the_configured_limit_through_zmq():
    limit = 64 * 1024
    a = ZmqChannel("alice", ["bob"], recv_timeout=10, max_message_bytes=limit, **FAST)
    b = ZmqChannel("bob", ["alice"], recv_timeout=10, max_message_bytes=limit, **FAST)
    zctx = raw = None
    try:
        a.connect({"bob": b.bound_address})
        b.connect({"alice": a.bound_address})
        a.wait_ready(10)
        b.wait_ready(10)
        # the sender is refused before anything leaves, with the size, the limit, peer and tag
        with pytest.raises(ProtocolError, match=rf"message of \d+ bytes exceeds the limit of {limit}") as info:
            a.send("bob", "weights", np.zeros(10_000))
        assert (info.value.peer, info.value.tag) == ("bob", "weights")
        a.send("bob", "weights", np.zeros(10))  # the refused send did not use up the tag
        assert b.recv("alice", "weights").shape == (10,)
        # a peer that ignores the limit: frames each under it, together over it
        zctx, raw = _raw_peer(b, "alice")
        halves = [b"\0" * (limit // 2 + 8)] * 2
        body = {"k": "list", "items": [{"k": "bytes", "f": 0}, {"k": "bytes", "f": 1}]}
        raw.send_multipart(_msg(body, halves, src="alice", tag="big"))
        with pytest.raises(ProtocolError, match=rf"message of {limit + 16} bytes exceeds the limit of {limit}") \
                as info:
            b.recv("alice", "big", timeout=5)
        assert (info.value.peer, info.value.tag) == ("alice", "big")
    finally:
        if raw is not None:
            raw.close(0)
            zctx.term()
        a.close(linger=0)
        b.close(linger=0)


# ============================================================================ HE: ciphertexts and kits


@pytest.fixture(scope="module")
def kits():
    return {
        "paillier": paillier.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=1),
        "ou": ou.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=1),
    }


def _keygen_like(kit):
    mod = paillier if kit.scheme == "paillier" else ou
    return mod.keygen(1024, allow_insecure=True, backend="cpu", n_jobs=1)


def _wire(ca):
    meta, frames = he_wire.cipher_to_wire(ca)
    return meta, bytearray(memoryview(frames[0]).tobytes())


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
@pytest.mark.parametrize("fault", ["at_modulus", "zero", "shares_factor"])
def test_ciphertext_out_of_range_names_its_index_and_key(kits, scheme, fault):
    kit = kits[scheme]
    meta, data = _wire(kit.encrypt(np.arange(3.0)))
    w = kit.cipher_width
    top = kit.n * kit.n if scheme == "paillier" else kit.n
    value = {"at_modulus": top, "zero": 0, "shares_factor": kit._p}[fault]
    if value.bit_length() > 8 * w:  # n² needs one bit more than the slot: the all-ones slot is ≥ n² too
        data[2 * w:3 * w] = b"\xff" * w
    else:
        data[2 * w:3 * w] = value.to_bytes(w, "little")
    bound = "n²" if scheme == "paillier" else "n"
    fp = kit.fingerprint()[:12]
    if fault != "shares_factor":  # out of range: refused on arrival
        with pytest.raises(InvalidCiphertextError, match=rf"ciphertext 2 is outside \[1, {bound}\) \(public key {fp}\)"):
            he_wire.cipher_from_wire(meta, [bytes(data)], kit)
        return
    # in range but not a unit: a party that only computes on it is not harmed (it could not
    # make one without a factor of n); the key owner refuses it before decrypting
    ca = he_wire.cipher_from_wire(meta, [bytes(data)], kit)
    with pytest.raises(InvalidCiphertextError, match=rf"ciphertext 2 is outside \[1, {bound}\) or not coprime to n"
                                                     rf" \(public key {fp}\)"):
        kit.decrypt(ca + kit.encrypt(np.ones(3)))


def test_out_of_range_ciphertext_through_zmq_names_peer_tag_and_index(kits, alice_bob_carol):
    alice, raw, _ = alice_bob_carol
    kit = kits["paillier"]
    alice.register_kit(kit.public_kit())
    meta, data = _wire(kit.encrypt(np.arange(2.0)))
    data[: kit.cipher_width] = b"\xff" * kit.cipher_width
    raw.send_multipart(_msg({"k": "cipher", "meta": meta, "f": [0]}, [bytes(data)]))
    with pytest.raises(ProtocolError, match=r"ciphertext 0 is outside \[1, n²\)") as info:
        alice.recv("bob", "x", timeout=5)
    assert (info.value.peer, info.value.tag) == ("bob", "x")


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_ciphertexts_under_another_key_name_both_fingerprints(kits, scheme):
    kit, other = kits[scheme], _keygen_like(kits[scheme])
    meta, data = _wire(other.encrypt(np.ones(2)))
    fp, other_fp = kit.fingerprint()[:12], other.fingerprint()[:12]
    with pytest.raises(KeyMismatchError, match=rf"under public key {other_fp}, expected {fp}"):
        he_wire.cipher_from_wire(meta, [bytes(data)], kit)
    with pytest.raises(KeyMismatchError, match=rf"{scheme}:{fp} vs {scheme}:{other_fp}"):
        kit.encrypt(np.ones(2)) + other.encrypt(np.ones(2))


def test_ciphertexts_under_an_unknown_key_through_zmq(kits):
    """bob encrypts under a key alice never registered: alice is told which key, from whom."""
    a = ZmqChannel("alice", ["bob"], recv_timeout=10, **FAST)
    b = ZmqChannel("bob", ["alice"], recv_timeout=10, **FAST)
    try:
        a.connect({"bob": b.bound_address})
        b.connect({"alice": a.bound_address})
        a.wait_ready(10)
        a.register_kit(kits["paillier"].public_kit())
        other = kits["ou"]
        b.send("alice", "enc", other.encrypt(np.ones(2)))
        with pytest.raises(ProtocolError, match=rf"ciphertexts under public key {other.fingerprint()[:16]}…, "
                                                r"which is not registered here") as info:
            a.recv("bob", "enc", timeout=5)
        assert (info.value.peer, info.value.tag) == ("bob", "enc")
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_512_bit_public_key_is_refused_without_opt_in():
    small = paillier.keygen(512, allow_insecure=True, backend="cpu", n_jobs=1)
    blob = he_wire.public_kit_to_wire(small)
    with pytest.raises(InsecureKeyError, match=r"public key of 512 bits; at least 2048 required"):
        he_wire.load_public_kit(blob)
    assert he_wire.load_public_kit(blob, allow_insecure=True, backend="cpu").fingerprint() == small.fingerprint()
    with pytest.raises(InsecureKeyError, match=r"key_size=512 is below 2048 bits; pass allow_insecure=True"):
        paillier.keygen(512)
    # from a peer, through the channel's decoder: refused, naming the size, the peer and the tag
    header, frames, _ = wire.build_message("bob", "pk", small.public_kit())
    with pytest.raises(ProtocolError, match=r"invalid public kit: InsecureKeyError: public key of 512 bits") as info:
        _decode([header, *[memoryview(f).tobytes() for f in frames]])
    assert (info.value.peer, info.value.tag) == ("bob", "pk")


def _corrupt(doc: dict, how: str, n: int) -> dict:
    doc = dict(doc)
    if how == "not_hex":
        doc["n"] = "zz" + doc["n"][2:]
    elif how == "even":
        doc["n"] = format(n + 1, "x")
    elif how == "missing":
        del doc["n"]
    elif how == "number":
        doc["n"] = n
    elif how == "negative":
        doc["n"] = "-" + doc["n"]
    elif how == "too_big":
        doc["n"] = format((1 << (MAX_KEY_BITS + 8)) + 1, "x")
    return doc


KIT_FAULTS = {
    "not_hex": r"field 'n' is not a hex number of at most \d+ bits: 'zz",
    "even": r"n must be odd and ≥ 3, got an even n of 1024 bits",
    "missing": r"public kit has no field 'n'",
    "number": r"field 'n' is not a hex number of at most \d+ bits: \d+",
    "negative": r"field 'n' is not a hex number of at most \d+ bits: '-",
    "too_big": rf"public key of {MAX_KEY_BITS + 9} bits exceeds the limit of {MAX_KEY_BITS}",
}


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
@pytest.mark.parametrize("how", list(KIT_FAULTS))
def test_kit_blob_with_a_corrupted_modulus(kits, scheme, how):
    kit, says = kits[scheme], KIT_FAULTS[how]
    doc = json.loads(he_wire.public_kit_to_wire(kit))
    blob = json.dumps(_corrupt(doc, how, kit.n)).encode()
    with pytest.raises(InvalidCiphertextError, match=says):
        he_wire.load_public_kit(blob, allow_insecure=True, backend="cpu")


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_kit_blob_with_a_flipped_modulus_bit_is_another_key(kits, scheme):
    """An odd n with one bit flipped may pass every check a receiver can make -- but then it
    *is* another key: its fingerprint differs and nothing encrypted under the real key is
    accepted.  (Flips that break a check are refused outright.)"""
    kit = kits[scheme]
    doc = json.loads(he_wire.public_kit_to_wire(kit))
    label = "Paillier" if scheme == "paillier" else "OU"
    loaded = refused = 0
    for bit in range(100, 140):
        doc["n"] = format(kit.n ^ (1 << bit), "x")
        try:
            bent = he_wire.load_public_kit(json.dumps(doc).encode(), allow_insecure=True, backend="cpu")
        except InvalidCiphertextError as exc:  # hs / G / H no longer units mod the bent n
            assert f"invalid {label} public key" in str(exc)
            refused += 1
            continue
        loaded += 1
        assert bent.fingerprint() != kit.fingerprint()
        meta, data = _wire(kit.encrypt(np.ones(2)))
        with pytest.raises(KeyMismatchError, match=rf"expected {bent.fingerprint()[:12]}"):
            he_wire.cipher_from_wire(meta, [bytes(data)], bent)
        if loaded == 3:
            break
    assert loaded == 3, f"only {loaded} of {loaded + refused} bent keys loaded"


def test_cipher_shape_that_overflows_int64_is_refused(kits):
    kit = kits["paillier"]
    meta, data = _wire(kit.encrypt(np.arange(3.0)))
    meta = dict(meta, shape=[2**39] * 8)  # numpy's int64 product of this is 0
    with pytest.raises(ProtocolError, match=r"cipher array shape \[549755813888, .*\] holds more than"):
        he_wire.cipher_from_wire(meta, [bytes(data)], kit)


def test_non_integer_raw_ciphertext_is_named(kits):
    with pytest.raises(InvalidCiphertextError, match=r"ciphertext 1 is not an integer: str '12x'"):
        kits["paillier"].from_raw([5, "12x"])


# ============================================================================ jobs: load_job


@pytest.fixture
def job_doc(tmp_path):
    doc = copy.deepcopy(small_job(tmp_path / "out"))
    doc["steps"] = [{"psi": {}}, {"train": {"model": "secureboost", "params": {"n_estimators": 1, "max_depth": 1}}}]
    return doc


GUEST = pd.read_csv(TEST_DATA / "breast_hetero_guest.csv")
HOST = pd.read_csv(TEST_DATA / "breast_hetero_host.csv")


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _problem(tmp_path: Path, doc: dict | str) -> str:
    path = tmp_path / "job.yaml"
    if isinstance(doc, str):
        path.write_text(doc)
    else:
        write_yaml(path, doc)
    with pytest.raises(JobConfigError) as info:
        load_job(path)
    assert isinstance(info.value, ConfigError)
    text = str(info.value)
    assert str(path) in text
    return text


def _labels(values) -> pd.DataFrame:
    g = GUEST.copy()
    g["y"] = values
    return g


@pytest.mark.parametrize("party, frame, says", [
    ("guest", _labels(np.where(np.arange(len(GUEST)) == 5, np.inf, GUEST["y"])),
     r"parties\.guest\.data\.label_column: the label 'y' is infinite in 1 row\(s\) of bad\.csv \(first at data row 6\)"),
    ("guest", _labels(np.where(np.arange(len(GUEST)) == 5, np.nan, GUEST["y"])),
     r"parties\.guest\.data\.label_column: the label 'y' is missing in 1 row\(s\) of bad\.csv"),
    ("guest", _labels(1),
     r"parties\.guest\.data\.label_column: the label 'y' has a single value; classification needs two classes"),
    ("host", HOST.assign(id=HOST["id"].where(HOST.index != 8, HOST["id"][7])),
     (rf"parties\.host\.data\.id_column: ID '{HOST['id'][7]}' appears more than once in bad\.csv \(data rows 8, 9;"
      r" 1 repeated ID\(s\) in all\): PSI needs distinct IDs; .* steps\[0\]\.psi\.duplicates: drop")),
    ("host", HOST.assign(id=HOST["id"].astype(str).where(HOST.index != 7, "")),
     r"parties\.host\.data\.id_column: empty ID in column 'id' of bad\.csv at data row 8 \(1 empty in all\)"),
    ("host", HOST.drop(columns=["id"]),
     r"parties\.host\.data\.id_column: no column 'id' in bad\.csv \(columns: x0, x1,"),
], ids=["inf_label", "nan_label", "one_class", "duplicate_id", "empty_id", "no_id_column"])
def test_bad_data_files_are_refused_before_anything_runs(tmp_path, job_doc, party, frame, says):
    job_doc["parties"][party]["data"]["path"] = str(_write_csv(tmp_path / "bad.csv", frame))
    text = _problem(tmp_path, job_doc)
    assert re.search(says, text), text
    assert not (tmp_path / "out").exists()


def test_wrong_separator_gets_a_hint(tmp_path, job_doc):
    job_doc["parties"]["host"]["data"]["sep"] = ";"
    text = _problem(tmp_path, job_doc)
    assert "no column 'id' in breast_hetero_host.csv" in text
    assert "the header is one column: is the separator ',', not ';'? (data.sep)" in text


def test_prediction_file_missing_a_trained_feature(tmp_path, job_doc):
    pred = _write_csv(tmp_path / "pred_host.csv", HOST.drop(columns=["x3"]))
    job_doc["steps"].append({"predict": {"data": {"guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv")},
                                                  "host": {"path": str(pred)}}}})
    text = _problem(tmp_path, job_doc)
    assert ("steps[2].predict.data.host.path: pred_host.csv lacks the feature column(s) ['x3'] the model is "
            "trained on (from breast_hetero_host.csv)") in text


@pytest.mark.parametrize("path, value, says", [
    (("seed",), "seven", "seed: Input should be a valid integer, got 'seven'"),
    (("seed",), -1, "seed: Input should be greater than or equal to 0, got -1"),
    (("he", "key_size"), "2048", "he.key_size: Input should be a valid integer, got '2048'"),
    (("he", "allow_insecure"), "yes please", "he.allow_insecure: Input should be a valid boolean, got 'yes please'"),
    (("timeouts", "recv"), float("inf"), "timeouts.recv: Input should be a finite number, got inf"),
    (("timeouts", "recv"), "soon", "timeouts.recv: Input should be a valid number, got 'soon'"),
    (("steps", 1, "train", "params", "learning_rate"), True,
     "steps[1].train.params.learning_rate: Input should be a valid number, got True"),
    (("steps", 1, "train", "params", "n_estimators"), 2.5,
     "steps[1].train.params.n_estimators: Input should be a valid integer, got 2.5"),
    (("steps",), "psi", "steps: Input should be a valid list, got 'psi'"),
    (("parties", "host", "data", "columns"), "x0", "parties.host.data.columns: Input should be a valid list, got 'x0'"),
    (("parties", "host", "data", "id_column"), 5, "parties.host.data.id_column: Input should be a valid string, got 5"),
    (("he", "keysize"), 1024,
     "he.keysize: unknown key 'keysize' (allowed here: scheme, key_size, backend, n_jobs, allow_insecure)"),
    (("timeouts", "rcv"), 5, "timeouts.rcv: unknown key 'rcv' (allowed here: connect, recv, job, heartbeat)"),
    (("steps", 0), {}, "steps[0]: each step is a mapping with exactly one of psi, train, evaluate, predict, got none"),
], ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else "")
def test_config_values_of_the_wrong_type_name_key_and_value(tmp_path, job_doc, path, value, says):
    parent = job_doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    assert says in _problem(tmp_path, job_doc)


@pytest.mark.parametrize("text, says", [
    ("!!python/object/apply:os.system ['touch {marker}']\n",
     "not valid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("name: !!float ''\n", "not valid YAML: cannot build a value (IndexError"),
    ("parties: !!set 3\n", "not valid YAML: expected a mapping node, but found scalar"),
    ("a: {<<: 3}\n", "not valid YAML: while constructing a mapping: expected a mapping or list of mappings for merging"),
    ("? [1, 2]\n: 3\n", "not valid YAML: while constructing a mapping: found unhashable key"),
    ("[" * 3000 + "]" * 3000, "not valid YAML: nested too deeply"),
    ("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 9)),
     "more than 100000 YAML values once aliases (*name) are expanded"),
], ids=["python_tag", "bad_float", "bad_set", "bad_merge", "unhashable_key", "deep_nesting", "alias_bomb"])
def test_hostile_yaml_is_refused_quickly_and_executes_nothing(tmp_path, text, says):
    marker = tmp_path / "pwned"

    def hung(signum, frame):  # nine levels of nested aliases used to be walked 10^9 times
        raise AssertionError("load_job still busy after 10 s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        got = _problem(tmp_path, text.replace("{marker}", str(marker)))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert says in got
    assert not marker.exists()


def test_output_that_is_a_file_or_would_overwrite_an_input(tmp_path, job_doc):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    job_doc["output"] = str(a_file)
    assert f"output: {a_file} is a file; output needs a directory" in _problem(tmp_path, job_doc)
    job_doc["output"] = str(a_file / "out")
    assert f"output: {a_file / 'out'} is below the file {a_file}; output needs a directory" in \
        _problem(tmp_path, job_doc)
    # a prediction file kept where the run writes its predictions
    out = tmp_path / "out"
    (out / "guest").mkdir(parents=True)
    pred = _write_csv(out / "guest" / "predictions.csv", GUEST)
    before = pred.read_bytes()
    job_doc["output"] = str(out)
    job_doc["steps"].append({"predict": {"data": {"guest": {"path": str(pred)},
                                                  "host": {"path": str(TEST_DATA / "breast_hetero_host.csv")}}}})
    text = _problem(tmp_path, job_doc)
    assert (f"steps[2].predict.data.guest.path: {pred} is an input of this job and an output of party 'guest': "
            "the run would overwrite it") in text
    assert pred.read_bytes() == before and a_file.read_text() == "keep me"


# ============================================================================ jobs: run_job


RUN_CASES = {
    "inf_label": ("guest", lambda g: g.assign(y=np.where(g.index == 5, np.inf, g["y"])), None, "reading its data",
                  r"DataError: bad\.csv: the label 'y' is infinite in 1 row\(s\) \(first at data row 6\)"),
    "nan_label": ("guest", lambda g: g.assign(y=np.where(g.index == 5, np.nan, g["y"])), None, "reading its data",
                  r"DataError: bad\.csv: the label 'y' is missing in 1 row\(s\)"),
    "text_feature": ("host", lambda h: h.assign(x3=h["x3"].astype(str).where(h.index != 4, "12,5 kg")), None,
                     "reading its data", (r"DataError: bad\.csv: feature column\(s\) \['x3'\] are not numeric "
                                          r"\(e\.g\. 'x3': '12,5 kg' at data row 5\)")),
    "inf_feature": ("host", lambda h: h.assign(x7=np.where(h.index == 9, -np.inf, h["x7"])), None,
                    "reading its data", r"DataError: bad\.csv: infinite value in feature column 'x7'"),
    "column_gone": ("host", lambda h: h.drop(columns=["x3"]), ["x0", "x3"], "reading its data",
                    r"DataError: bad\.csv: no column\(s\) \['x3'\] \(columns: id, x0, x1,"),
    "empty_id": ("host", lambda h: h.assign(id=h["id"].astype(str).where(h.index != 2, "")), None,
                 "reading its data", r"DataError: bad\.csv: empty ID in column 'id' at data row 3 \(1 empty in all\)"),
    "one_class": ("guest", lambda g: g.assign(y=0), None, "in step 'train'",
                  r"DataError: .*bad\.csv: label column 'y' has 1 class\(es\) \[0\] in the aligned rows; "
                  r"task 'binary' needs exactly 2"),
    "three_classes": ("guest", lambda g: g.assign(y=np.where(g.index < 9, 2, g["y"])), None, "in step 'train'",
                      r"label column 'y' has 3 class\(es\) \[0, 1, 2\] in the aligned rows; task 'binary'"),
    "duplicate_id": ("host", lambda h: h.assign(id=h["id"].where(h.index != 3, h["id"][2])), None, "in step 'psi'",
                     rf"DataError: 1 duplicate ID\(s\) among 569, e\.g\. '{HOST['id'][2]}' \(position 3\)"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_data_that_goes_bad_after_the_check_fails_the_run_clearly(tmp_path, job_doc, case):
    """The file changes between ``load_job`` and the run (or the job was checked on another host):
    the party that reads it fails, naming itself, the step, the file and the column or row."""
    party, change, columns, step, says = RUN_CASES[case]
    src = GUEST if party == "guest" else HOST
    bad = _write_csv(tmp_path / "bad.csv", src)
    job_doc["parties"][party]["data"]["path"] = str(bad)
    if columns is not None:
        job_doc["parties"][party]["data"]["columns"] = columns
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    _write_csv(bad, change(src.copy()))
    with pytest.raises(PartyFailed) as info:
        run_job(job, progress=False)
    assert info.value.party == party
    text = str(info.value)
    assert text.startswith(f"party {party!r} failed {step}"), text
    assert re.search(says, text), text
    assert isinstance(info.value.error, DataError)


def _truncate_row(path: Path, data_row: int, keep_fields: int) -> None:
    """Cut data row ``data_row`` (1-based) of a CSV file to its first ``keep_fields`` fields."""
    lines = path.read_text().splitlines(keepends=True)
    lines[data_row] = ",".join(lines[data_row].rstrip("\n").split(",")[:keep_fields]) + "\n"
    path.write_text("".join(lines))


def test_truncated_csv_row_is_refused_before_anything_runs(tmp_path, job_doc):
    """pandas would pad the short row with missing values and train on it."""
    bad = _write_csv(tmp_path / "bad.csv", HOST)
    _truncate_row(bad, 7, 4)
    job_doc["parties"]["host"]["data"]["path"] = str(bad)
    text = _problem(tmp_path, job_doc)
    assert re.search(r"parties\.host\.data\.path: bad\.csv: data row 7 has 4 field\(s\) where the header "
                     rf"has {HOST.shape[1]} \(1 such row\(s\) in all; a truncated or misaligned file\?\)", text), text
    assert not (tmp_path / "out").exists()


def test_row_truncated_after_the_check_fails_the_run_clearly(tmp_path, job_doc):
    bad = _write_csv(tmp_path / "bad.csv", GUEST)
    job_doc["parties"]["guest"]["data"]["path"] = str(bad)
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    _truncate_row(bad, 12, 2)
    with pytest.raises(PartyFailed) as info:
        run_job(job, progress=False)
    assert info.value.party == "guest"
    assert isinstance(info.value.error, DataError)
    assert re.search(r"failed reading its data.*DataError: bad\.csv: data row 12 has 2 field\(s\)", str(info.value))


# ============================================================================ nothing lost


def _snapshot(paths: list[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize("failure", ["before_training", "during_training"])
def test_a_failed_run_keeps_the_earlier_model_and_the_inputs(tmp_path, job_doc, failure):
    guest = _write_csv(tmp_path / "guest.csv", GUEST)
    host = _write_csv(tmp_path / "host.csv", HOST)
    job_doc["parties"]["guest"]["data"]["path"] = str(guest)
    job_doc["parties"]["host"]["data"]["path"] = str(host)
    good = load_job(write_yaml(tmp_path / "good.yaml", job_doc))
    run_job(good, progress=False)
    models = [good.output / p / "model.json" for p in ("guest", "host")]
    kept = _snapshot([*models, guest, host])
    for m in models:
        assert json.loads(m.read_text())["job"]["party"] in ("guest", "host")

    bad_doc = copy.deepcopy(job_doc)
    if failure == "before_training":
        # the host's data is unusable: it fails reading it, long before any model is written
        bad_host = _write_csv(tmp_path / "host_text.csv", HOST.assign(x1="n.a."))
        bad_doc["parties"]["host"]["data"]["path"] = str(bad_host)
        says = "party 'host' failed reading its data: DataError"
    else:
        # no PSI and fewer rows at the host: the parties disagree in the middle of 'train'
        short = _write_csv(tmp_path / "host_short.csv", HOST.iloc[:500])
        bad_doc["parties"]["host"]["data"]["path"] = str(short)
        bad_doc["steps"] = [bad_doc["steps"][1], {"evaluate": {"test_size": 0.25}}]
        says = "failed in step 'train'"
    bad = load_job(write_yaml(tmp_path / "bad.yaml", bad_doc))
    assert bad.output == good.output
    with pytest.raises(PartyFailed, match=says):
        run_job(bad, progress=False)
    assert _snapshot(list(kept)) == kept  # byte for byte: models and inputs
    for m in models:
        json.loads(m.read_text())
        assert not list(m.parent.glob(".model.json.tmp-*"))


# ============================================================================ scikit-learn estimators


def _estimators():
    from hefl.models.hetero_lr import HeteroLogisticRegression
    from hefl.models.secureboost import SecureBoostClassifier

    return {
        "secureboost": lambda **kw: SecureBoostClassifier(**{"n_estimators": 1, "max_depth": 1, "he": "mock",
                                                              "transport": "threads", **kw}),
        "hetero_lr": lambda **kw: HeteroLogisticRegression(**{"max_iter": 1, "he": "mock", "transport": "threads",
                                                               "allow_insecure": True, **kw}),
    }


RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4))
Y = (X[:, 0] > 0).astype(int)


def _with(a: np.ndarray, row: int, col: int | None, value) -> np.ndarray:
    a = a.astype(np.float64).copy()
    if col is None:
        a[row] = value
    else:
        a[row, col] = value
    return a


@pytest.mark.parametrize("model", ["secureboost", "hetero_lr"])
@pytest.mark.parametrize("data, says", [
    (lambda: (X, _with(Y, 3, None, np.nan)), r"the label y contains NaN in 1 row\(s\) \(first at row 3\)"),
    (lambda: (X, _with(Y, 7, None, np.inf)), r"the label y contains infinity in 1 row\(s\) \(first at row 7\)"),
    (lambda: (X, np.zeros(len(X))), r"only (one|1) class"),
    (lambda: (pd.DataFrame(X, columns=["age", "income", "debt", "score"]).astype({"income": object})
              .assign(income=lambda d: d["income"].where(d.index != 2, "12k")), Y),
     r"feature column 'income' is not numeric: '12k' at row 2"),
    (lambda: (_with(X, 5, 3, np.inf), Y), r"feature column 3 contains infinity in 1 row\(s\) \(first at row 5\)"),
    (lambda: (X, Y[:-1]), r"inconsistent numbers of samples: \[40, 39\]"),
], ids=["nan_label", "inf_label", "one_class", "text_feature", "inf_feature", "length_mismatch"])
def test_estimator_fit_on_bad_data(model, data, says):
    Xb, yb = data()
    with pytest.raises(DataError, match=says):
        _estimators()[model]().fit(Xb, yb)


@pytest.mark.parametrize("model, params, says", [
    ("secureboost", {"learning_rate": "fast"}, "learning_rate must be a finite number, got 'fast'"),
    ("secureboost", {"n_estimators": 2.5}, "n_estimators must be an integer, got 2.5"),
    ("secureboost", {"max_depth": -1}, "max_depth must be >= 0, got -1"),
    ("secureboost", {"key_size": "2048"}, "key_size must be an integer, got '2048'"),
    ("secureboost", {"early_stopping_rounds": "x"}, "early_stopping_rounds must be an integer, got 'x'"),
    ("secureboost", {"he": "rsa"}, "he must be one of ('paillier', 'ou', 'mock'), got 'rsa'"),
    ("secureboost", {"parties": {"g": [0, 1], "h": [2, 9]}}, "party 'h': column index 9 out of range for 4 features"),
    ("hetero_lr", {"learning_rate": "fast"}, "learning_rate must be a positive number, got 'fast'"),
    ("hetero_lr", {"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ("hetero_lr", {"optimizer": "newton"}, "optimizer must be one of"),
], ids=lambda v: "-".join(v) if isinstance(v, dict) else (v if v in ("secureboost", "hetero_lr") else ""))
def test_estimator_parameters_of_the_wrong_type(model, params, says):
    with pytest.raises(ConfigError) as info:
        _estimators()[model](**params).fit(X, Y)
    assert says in str(info.value)


def test_estimator_predict_on_the_wrong_columns():
    est = _estimators()["secureboost"]().fit(X, Y)
    with pytest.raises(DataError, match=r"X has 3 features, but SecureBoostClassifier is expecting 4"):
        est.predict(X[:, :3])
    with pytest.raises(DataError, match=r"feature column 0 is not numeric: 'n/a' at row 0"):
        est.predict(np.array([["n/a", 1, 2, 3]], dtype=object))
