"""CipherArray and public-kit payloads through the hefl.he wire hooks."""

from __future__ import annotations

import numpy as np
import pytest

he_wire = pytest.importorskip("hefl.he.wire")

from hefl.errors import ProtocolError
from hefl.federation import run_threads
from hefl.he import ckks, mock, paillier
from hefl.transport import MemoryHub, wire


@pytest.fixture(scope="module")
def paillier_kit():
    return paillier.keygen(1024, allow_insecure=True)


@pytest.fixture(scope="module")
def mock_kit():
    return mock.keygen(256)


def _roundtrip(obj, kits):
    header, frames, _ = wire.build_message("alice", "ct", obj)
    h = wire.parse_header(header)
    frames = [bytearray(memoryview(f).tobytes()) for f in frames]
    wire.check_frames(h, frames, 2**32)
    return wire.decode_payload(h["body"], frames, kits=kits, peer="alice", tag="ct")


@pytest.mark.parametrize("which", ["paillier", "mock"])
def test_cipher_array_roundtrip(which, paillier_kit, mock_kit):
    kit = paillier_kit if which == "paillier" else mock_kit
    x = np.array([[1.5, -2.0, 0.0], [3.25, 4.0, -5.5]])
    ca = kit.encrypt(x)
    pub = kit.public_kit()
    out = _roundtrip({"enc": ca, "n": 2}, {pub.fingerprint(): pub})
    assert out["n"] == 2 and out["enc"].shape == (2, 3)
    assert np.allclose(kit.decrypt(out["enc"]), x)


def test_received_ciphertexts_live_in_their_frame(paillier_kit):
    # the transport hands its received frame over: no copy of the ciphertext bytes
    pub = paillier_kit.public_kit()
    ca = paillier_kit.encrypt(np.array([1.0, -2.0, 3.5]))
    header, frames, _ = wire.build_message("alice", "ct", ca)
    h = wire.parse_header(header)
    frame = bytearray(memoryview(frames[0]).tobytes())
    out = wire.decode_payload(h["body"], [frame], kits={pub.fingerprint(): pub}, peer="alice", tag="ct")
    assert np.shares_memory(out._flat(), np.frombuffer(frame, dtype=np.uint8))
    assert np.allclose(paillier_kit.decrypt(out), [1.0, -2.0, 3.5])


def test_cipher_from_bytes_copies_unless_the_buffer_is_adopted(paillier_kit):
    pub = paillier_kit.public_kit()
    ca = paillier_kit.encrypt(np.array([0.5, 1.5]))
    raw = bytearray(ca.to_bytes())
    kept = pub.cipher_from_bytes(raw, (2,), ca.frac_bits)
    adopted = pub.cipher_from_bytes(raw, (2,), ca.frac_bits, adopt=True)
    from_bytes = pub.cipher_from_bytes(bytes(raw), (2,), ca.frac_bits, adopt=True)  # read-only
    raw[:8] = b"\x00" * 8  # the caller reuses its buffer
    assert np.allclose(paillier_kit.decrypt(kept), [0.5, 1.5])
    assert np.allclose(paillier_kit.decrypt(from_bytes), [0.5, 1.5])
    assert np.shares_memory(adopted._flat(), np.frombuffer(raw, dtype=np.uint8))
    with pytest.raises(Exception, match="outside"):  # adopted bytes are range-checked too
        pub.cipher_from_bytes(bytearray(len(raw)), (2,), ca.frac_bits, adopt=True)


def test_unregistered_fingerprint_rejected(paillier_kit):
    ca = paillier_kit.encrypt(np.arange(3.0))
    with pytest.raises(ProtocolError, match="not registered") as ei:
        _roundtrip(ca, {})
    assert (ei.value.peer, ei.value.tag) == ("alice", "ct")


def test_out_of_range_ciphertext_rejected(paillier_kit):
    pub = paillier_kit.public_kit()
    ca = paillier_kit.encrypt(np.arange(2.0))
    meta, frames = he_wire.cipher_to_wire(ca)
    bad = bytearray(memoryview(frames[0]).tobytes())
    bad[: len(bad) // 2] = b"\xff" * (len(bad) // 2)  # first ciphertext >= n^2
    body = {"k": "cipher", "meta": meta, "f": [0]}
    with pytest.raises(ProtocolError) as ei:
        wire.decode_payload(body, [bad], kits={pub.fingerprint(): pub}, peer="bob", tag="t")
    assert ei.value.peer == "bob"


def _kit_exchange(kit):
    x = np.array([0.5, -1.25, 8.0])

    def owner(ctx):
        ctx.send("peer", "pk", kit)  # a SecretKit sends its public part only
        ctx.send("peer", "enc", kit.encrypt(x))
        return kit.decrypt(ctx.recv("peer", "sum"))

    def peer(ctx):
        pk = ctx.recv("owner", "pk")  # registered automatically
        assert not hasattr(pk, "decrypt")
        enc = ctx.recv("owner", "enc")
        ctx.send("owner", "sum", enc + enc)
        return pk.fingerprint()

    out = run_threads({"owner": owner, "peer": peer}, timeout=60)
    assert np.allclose(out["owner"], 2 * x)
    assert out["peer"] == kit.public_kit().fingerprint()


def test_kit_then_ciphertexts_over_channels(mock_kit):
    _kit_exchange(mock_kit)


@pytest.mark.slow
def test_kit_then_ciphertexts_paillier_2048():
    _kit_exchange(paillier.keygen(2048))


def test_insecure_kit_from_peer_rejected(paillier_kit):
    with pytest.raises(ProtocolError, match="2048"):
        _roundtrip(paillier_kit.public_kit(), {})


def test_register_kit_explicitly(mock_kit):
    hub = MemoryHub(["a", "b"], recv_timeout=5)
    a, b = hub.channel("a"), hub.channel("b")
    a.send("b", "enc", mock_kit.encrypt(np.ones(2)))
    b.register_kit(mock_kit.public_kit())
    assert np.allclose(mock_kit.decrypt(b.recv("a", "enc")), 1.0)


def test_ckks_roundtrip():
    kit = ckks.keygen()
    x = np.linspace(-1, 1, 10)
    pub = kit.public_kit()
    out = _roundtrip(kit.encrypt(x), {pub.fingerprint(): pub})
    assert np.allclose(kit.decrypt(out), x, atol=1e-4)
    loaded = _roundtrip(kit, {})
    assert loaded.fingerprint() == pub.fingerprint() and not hasattr(loaded, "decrypt")
