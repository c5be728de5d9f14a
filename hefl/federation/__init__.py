"""Federation runtime: party contexts and launchers.

Role code gets a :class:`PartyContext` and never touches sockets::

    def alice(ctx):
        ctx.send("bob", "x", np.arange(10))
        tree = ctx.sub("tree-3")                 # tags "tree-3/..."
        return tree.recv("bob", "hist")

Three ways to get contexts:

* ``run_local({"alice": alice, "bob": bob})`` -- one OS process per party on loopback
  ZeroMQ (free ports), results back to the caller, first failure re-raised, every other
  party stopped; what ``fit()`` and ``hefl run job.yaml`` use on one machine.
* ``run_threads({...})`` -- all parties as threads over in-memory channels (same wire
  format and checks): fast unit tests of protocol code with the mock HE backend.
* ``PartyContext.connect(self_name, addresses, *, curve_secret_key=None,
  curve_public_keys=None, recv_timeout=300.0, connect_timeout=None, bind=None,
  heartbeat_interval=None, heartbeat_timeout=10.0, max_message_bytes=..., linger=10.0)``
  -- one party of a real multi-host deployment (what ``hefl run job.yaml --party NAME``
  calls): binds ``addresses[self_name]`` (or ``bind``), connects to every other
  ``"tcp://host:port"``, waits until all peers are up, and returns the context (close it
  when done). With a CURVE secret key and every peer's public key the links are
  CurveZMQ-encrypted and only those peers are accepted; without, plaintext (logged once).

Tags: each ``(peer, full tag)`` is sent once and received once; duplicates and
re-sends are ``ProtocolError``; every ``recv`` has a timeout (``TimeoutError`` names the
peer, the tag and what arrived instead); a dead peer is a ``PeerLostError``.
"""

from hefl.federation.context import PartyContext
from hefl.federation.local import RemoteTraceback, run_local, run_threads

__all__ = ["PartyContext", "RemoteTraceback", "run_local", "run_threads"]
