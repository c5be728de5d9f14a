"""Transport: move tagged payloads between parties without pickle.

Role code never uses this package directly -- it gets a
:class:`hefl.federation.PartyContext` -- but everything underneath is here:

* :class:`Channel` -- the base class: ``send(peer, tag, obj)``, ``recv(peer, tag, timeout)``,
  ``close()``; exactly-once tags, timeouts, bounded buffering (:mod:`hefl.transport.base`);
* :class:`ZmqChannel` -- ZeroMQ ROUTER/DEALER over TCP, CurveZMQ when keys are given,
  heartbeats for peer-loss detection (:mod:`hefl.transport.zmq_channel`);
* :class:`MemoryChannel` / :class:`MemoryHub` -- the same in one process, for tests
  (:mod:`hefl.transport.memory`);
* the wire format -- a JSON header plus raw frames, documented and checked in
  :mod:`hefl.transport.wire`;
* CURVE key files -- :mod:`hefl.transport.curve` (``hefl keygen --out DIR``).
"""

from hefl.transport.base import Channel
from hefl.transport.curve import generate_keypair, load_public_key, load_secret_key, write_keypair
from hefl.transport.memory import MemoryChannel, MemoryHub
from hefl.transport.wire import DEFAULT_MAX_MESSAGE_BYTES, decode_payload, encode_payload
from hefl.transport.zmq_channel import ZmqChannel

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Channel",
    "MemoryChannel",
    "MemoryHub",
    "ZmqChannel",
    "decode_payload",
    "encode_payload",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "write_keypair",
]
