"""The ECDH-PSI protocol (two or more parties) over a party context.

Protocol (parties ``P0 … P(n-1)`` sorted by name, ring successor ``P(j+1 mod n)``, one
*leader* ``L``, by default ``P0``; every party ``j`` draws a fresh secret scalar ``k_j``):

1. *hello* — every party tells every other its set size, batch size, the party list and
   the leader; any disagreement is a :class:`~hefl.errors.ProtocolError`.
2. *ring* — party ``o`` shuffles its IDs with a secret permutation ``σ_o``, sends
   ``k_o·H(x)`` to its successor, which multiplies by its own key and passes it on, and so
   on around the ring. After ``n - 1`` hops, at ``P(o-1)``, every value carries all keys:
   ``K·H(x)`` with ``K = k_0⋯k_(n-1)``, the same for the same ID whoever holds it.
   ``P(o-1)`` keeps the first 16 bytes of each fully blinded value and sends them to the
   leader (for the leader's own set it first applies a fresh secret shuffle ``τ``, so the
   leader cannot tell which of the fully blinded values are its own IDs).
3. *match* — the leader finds the values present in all ``n`` sets, sorts them (this
   sort is the common output order), and tells each party ``o`` the positions (in the
   order ``o`` sent them) of its matches in that order. For its own set the positions go
   through ``P(L-1)``, which undoes ``τ``. Each party undoes ``σ_o`` and returns the
   positions of the shared IDs in its input, in the common order.

Everything streams in batches (``hop h`` of batch ``b`` runs at step ``b + 2h``), and a
party sends batch ``b`` of a set only once its successor has taken batch ``b - 8``, so at
most a few batches of 32-byte points are in flight per party, whatever the set sizes and
speeds, and all parties are busy at the same time; each ID costs one X25519
multiplication per party (``n`` per ID overall).

Who learns what (semi-honest parties, no collusion):

* every party: the set sizes of all parties and the intersection of all sets (as
  positions in its own input), nothing else. Intermediate values carry fewer than all
  keys and are pseudorandom (DDH); no party can link a fully blinded value to one of its
  own IDs, apart from the shared ones in its result.
* the leader additionally sees the ``n`` fully blinded sets, none of them linkable to IDs
  (its own is shuffled by ``P(L-1)``, the others by their owners): it learns the
  *cardinality* of the intersection of every subset of the parties' sets (for two parties,
  that is just the intersection size everyone learns).
* ``P(L-1)`` learns nothing beyond the intersection size from the positions it unshuffles.

Collusion of the leader with ``P(L-1)`` reveals which of the leader's IDs lie in each
other party's set; collusion of ``P(j-1)``, ``P(j+1)`` … can strip keys. Use a TEE
aggregator or a stronger protocol if that matters.
"""

from __future__ import annotations

import logging
import os
import time
from functools import reduce
from typing import Any

import numpy as np

from hefl.errors import ConfigError, DataError, ProtocolError
from hefl.psi._curve import HASH_NAME, POINT_BYTES
from hefl.psi._engine import Engine, Job, JobFailed

__all__ = ["PROTOCOL_VERSION", "ecdh_psi", "random_permutation"]

log = logging.getLogger("hefl.psi")

PROTOCOL_VERSION = 2  # 2: ring batches are acknowledged (a window of WINDOW in flight)
FULL_BYTES = 16  # kept bytes of a fully blinded value: 128 bits, no collisions in practice
MAX_BATCH = 1 << 20
LAG = 2  # steps between a hop and the next hop of the same batch: slack against jitter
# Batches of one set a party may send ahead of what its successor has taken: it waits for
# the successor's acknowledgement of batch b - WINDOW before sending batch b. Without it a
# party whose inputs run out (its predecessor's set is small) sends its whole set at once.
# More than LAG, so that no ring of waits can close (each wait is on a party further behind).
WINDOW = 4 * LAG
_P_BYTES = (2**255 - 19).to_bytes(32, "little")


def random_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` from the OS CSPRNG (not a seeded PRNG).

    Parameters
    ----------
    n : int
        Length.

    Returns
    -------
    numpy.ndarray of int64
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(n, 2)
    # Two 64-bit keys: ties (which would bias the stable sort) are out of reach.
    return np.lexsort((keys[:, 1], keys[:, 0])).astype(np.int64)


def _noncanonical(a: np.ndarray) -> np.ndarray:
    """Rows that no honest X25519 output can be: top bit set or u >= p (little-endian)."""
    top = a[:, 31]
    high = (top == 0x7F) & (a[:, 1:31] == 0xFF).all(axis=1) & (a[:, 0] >= 0xED)
    return (top >= 0x80) | high


def _check_array(
    obj: Any, rows: int, cols: int, *, peer: str, tag: str, what: str
) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.dtype != np.uint8 or obj.shape != (rows, cols):
        got = (
            f"{obj.dtype} array of shape {obj.shape}"
            if isinstance(obj, np.ndarray)
            else type(obj).__name__
        )
        raise ProtocolError(
            f"expected {what} as a uint8 array of shape ({rows}, {cols}), got {got}",
            peer=peer,
            tag=tag,
        )
    return np.ascontiguousarray(obj)


def _check_positions(obj: Any, bound: int, *, peer: str, tag: str) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.ndim != 1 or obj.dtype.kind not in "iu":
        got = f"{obj.dtype} array of shape {obj.shape}" if isinstance(obj, np.ndarray) else type(obj).__name__
        raise ProtocolError(f"expected a 1-D integer array of positions, got {got}", peer=peer, tag=tag)
    pos = obj.astype(np.int64, copy=False)
    if pos.size and (pos.min() < 0 or pos.max() >= bound):
        raise ProtocolError(
            f"positions out of range [0, {bound}): min {pos.min()}, max {pos.max()}", peer=peer, tag=tag
        )
    return pos


class _Ring:
    """One party's run of the protocol (see the module docstring)."""

    def __init__(
        self,
        ctx: Any,
        ids: list[str],
        *,
        peers: list[str],
        batch_size: int,
        n_jobs: int | None,
        leader: str | None,
        timeout: float | None,
    ) -> None:
        self.ctx = ctx
        self.ids = ids
        self.me: str = ctx.self_name
        self.parties = sorted({self.me, *peers})
        self.n = len(self.parties)
        self.j = self.parties.index(self.me)
        if leader is None:
            leader = self.parties[0]
        if leader not in self.parties:
            raise ConfigError(f"leader {leader!r} is not one of the PSI parties {self.parties}")
        self.leader = leader
        self.L = self.parties.index(leader)
        self.pred = self.parties[(self.j - 1) % self.n]
        self.succ = self.parties[(self.j + 1) % self.n]
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.peers = [p for p in self.parties if p != self.me]

    # ------------------------------------------------------------------ helpers
    def recv(self, peer: str, tag: str) -> Any:
        return self.ctx.recv(peer, tag, timeout=self.timeout)

    def rows(self, o: int, b: int) -> int:
        return min(self.bsz[o], self.size[o] - b * self.bsz[o])

    def send_chunks(self, peer: str, name: str, arr: np.ndarray) -> None:
        chunk = max(1, self.batch_size) * 16
        self.ctx.send(peer, f"{name}-n", {"count": int(arr.shape[0])})
        for c, start in enumerate(range(0, arr.shape[0], chunk)):
            self.ctx.send(peer, f"{name}-{c}", np.ascontiguousarray(arr[start : start + chunk]))

    def recv_positions(self, peer: str, name: str, bound: int) -> np.ndarray:
        head = self.recv(peer, f"{name}-n")
        count = head.get("count") if isinstance(head, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= bound:
            raise ProtocolError(
                f"expected {{'count': 0..{bound}}}, got {head!r:.80}", peer=peer, tag=f"{name}-n"
            )
        parts = []
        got = 0
        c = 0
        while got < count:
            tag = f"{name}-{c}"
            part = _check_positions(self.recv(peer, tag), bound, peer=peer, tag=tag)
            if part.size == 0 or got + part.size > count:
                raise ProtocolError(f"chunk of {part.size} positions after {got} of {count}", peer=peer, tag=tag)
            parts.append(part)
            got += part.size
            c += 1
        pos = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if np.unique(pos).size != pos.size:
            raise ProtocolError("repeated positions in the match list", peer=peer, tag=f"{name}-0")
        return pos

    # ------------------------------------------------------------------ phases
    def hello(self) -> None:
        mine = {
            "psi": "ecdh",
            "version": PROTOCOL_VERSION,
            "hash": HASH_NAME,
            "parties": self.parties,
            "leader": self.leader,
            "size": len(self.ids),
            "batch_size": self.batch_size,
        }
        for p in self.peers:
            self.ctx.send(p, "hello", mine)
        self.size = [0] * self.n
        self.bsz = [1] * self.n
        self.size[self.j] = len(self.ids)
        self.bsz[self.j] = self.batch_size
        for p in self.peers:
            h = self.recv(p, "hello")
            if not isinstance(h, dict):
                raise ProtocolError(f"expected a dict, got {type(h).__name__}", peer=p, tag="hello")
            for key in ("psi", "version", "hash", "parties", "leader"):
                if h.get(key) != mine[key]:
                    raise ProtocolError(
                        f"peer has {key}={h.get(key)!r:.200} but this party has {mine[key]!r:.200}",
                        peer=p,
                        tag="hello",
                    )
            size, bsz = h.get("size"), h.get("batch_size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(f"bad set size {size!r}", peer=p, tag="hello")
            if isinstance(bsz, bool) or not isinstance(bsz, int) or not 1 <= bsz <= MAX_BATCH:
                raise ProtocolError(f"bad batch size {bsz!r} (1..{MAX_BATCH})", peer=p, tag="hello")
            o = self.parties.index(p)
            self.size[o], self.bsz[o] = size, bsz
        self.nb = [-(-s // b) for s, b in zip(self.size, self.bsz)]

    def ring(self, engine: Engine) -> None:
        n, j, L = self.n, self.j, self.L
        sigma = self.sigma
        full_parts: dict[int, dict[int, np.ndarray]] = {o: {} for o in range(n)}
        tau_stash: list[np.ndarray] = []
        self.full_parts = full_parts
        # Sets whose full values reach the leader over the network, and who sends them.
        remote_full = [
            o for o in range(n) if o != L and (o - 1) % n != L
        ] if j == L else []
        last_hop = n - 1
        steps = max((self.nb[(j - h) % n] + LAG * h for h in range(n)), default=0)
        for s in range(steps):
            work: list[tuple[int, int, int]] = []  # (hop, origin, batch)
            jobs: list[Job] = []
            for h in range(n):
                o, b = (j - h) % n, s - LAG * h
                if not 0 <= b < self.nb[o]:
                    continue
                if h == 0:
                    idx = sigma[b * self.bsz[o] : (b + 1) * self.bsz[o]].tolist()
                    ids = self.ids
                    jobs.append(("blind", [ids[i].encode("utf-8", "surrogatepass") for i in idx]))
                else:
                    tag = f"r{o}-{b}"
                    arr = _check_array(
                        self.recv(self.pred, tag), self.rows(o, b), POINT_BYTES,
                        peer=self.pred, tag=tag, what="blinded points",
                    )
                    bad = _noncanonical(arr)
                    if bad.any():
                        raise ProtocolError(
                            f"malformed point (not a canonical X25519 value) at row {int(np.argmax(bad))}",
                            peer=self.pred, tag=tag,
                        )
                    if b + WINDOW < self.nb[o]:  # the sender waits for it before batch b + WINDOW
                        self.ctx.send(self.pred, f"a{o}-{b}", b)
                    jobs.append(("mult", arr.tobytes()))
                work.append((h, o, b))
            try:
                results = engine.run(jobs)
            except JobFailed as e:
                h, o, b = work[e.job]
                if h == 0:  # probability ~2**-250: an ID hashing to a low-order point
                    raise DataError(f"an ID hashes to a low-order curve point (batch {b}, row {e.row})") from None
                raise ProtocolError(
                    f"low-order point at row {e.row} (X25519 output would be all zero)",
                    peer=self.pred, tag=f"r{o}-{b}",
                ) from None
            for (h, o, b), res in zip(work, results):
                pts = np.frombuffer(res, dtype=np.uint8).reshape(-1, POINT_BYTES)
                if h < last_hop:
                    if b >= WINDOW:
                        tag = f"a{o}-{b - WINDOW}"
                        if self.recv(self.succ, tag) != b - WINDOW:
                            raise ProtocolError("malformed acknowledgement", peer=self.succ, tag=tag)
                    self.ctx.send(self.succ, f"r{o}-{b}", pts)
                    continue
                full = np.ascontiguousarray(pts[:, :FULL_BYTES])
                if o == L:
                    tau_stash.append(full)  # this party is P(L-1)
                elif j == L:
                    full_parts[o][b] = full
                else:
                    self.ctx.send(self.leader, f"f{o}-{b}", full)
            # The leader collects full values as they come (one step after they were sent).
            for o in remote_full:
                b = s - LAG * last_hop - 1
                if 0 <= b < self.nb[o]:
                    self._recv_full(o, b)
        for o in remote_full:
            for b in range(max(0, steps - LAG * last_hop - 1), self.nb[o]):
                self._recv_full(o, b)
        if tau_stash or (L - 1) % n == j:
            stash = np.concatenate(tau_stash) if tau_stash else np.zeros((0, FULL_BYTES), np.uint8)
            self.tau = random_permutation(stash.shape[0])
            shuffled = stash[self.tau]
            bsz = self.bsz[L]
            for b in range(self.nb[L]):
                self.ctx.send(self.leader, f"f{L}-{b}", np.ascontiguousarray(shuffled[b * bsz : (b + 1) * bsz]))

    def _recv_full(self, o: int, b: int) -> None:
        sender = self.parties[(o - 1) % self.n]
        tag = f"f{o}-{b}"
        self.full_parts[o][b] = _check_array(
            self.recv(sender, tag), self.rows(o, b), FULL_BYTES, peer=sender, tag=tag,
            what="fully blinded values",
        )

    def match(self) -> None:
        """Leader: intersect the fully blinded sets and send everyone its match positions."""
        n, L = self.n, self.L
        sender_L = self.parties[(L - 1) % n]
        for b in range(self.nb[L]):
            self._recv_full(L, b)
        keys, orders = [], []
        for o in range(n):
            parts = [self.full_parts[o][b] for b in range(self.nb[o])]
            flat = np.concatenate(parts) if parts else np.zeros((0, FULL_BYTES), np.uint8)
            key = np.ascontiguousarray(flat).view(f"S{FULL_BYTES}").ravel()
            order = np.argsort(key, kind="stable")
            sk = key[order]
            if sk.size > 1 and (sk[1:] == sk[:-1]).any():
                # set o's full values come from its last hop, party o-1 (its own IDs are
                # distinct): name that sender, or, where the leader made them itself, the
                # party that sent it their previous hop
                last = (o - 1) % n
                raise ProtocolError(
                    f"repeated fully blinded values in the set of party {self.parties[o]!r}",
                    peer=self.parties[last] if last != L else self.pred,
                    tag=f"f{o}-*",
                )
            keys.append(sk)
            orders.append(order)
        common = reduce(lambda a, c: np.intersect1d(a, c, assume_unique=True), keys)  # sorted
        self.common_size = int(common.size)
        for o in range(n):
            pos = orders[o][np.searchsorted(keys[o], common)].astype(np.int64)
            if o == L:
                self.send_chunks(sender_L, "tau", pos)
            else:
                self.send_chunks(self.parties[o], "res", pos)

    def unshuffle_for_leader(self) -> None:
        """P(L-1): map the leader's match positions from τ order back to the leader's order."""
        pos = self.recv_positions(self.leader, "tau", self.size[self.L])
        self.send_chunks(self.leader, "untau", self.tau[pos])

    def run(self) -> np.ndarray:
        t0 = time.perf_counter()
        self.hello()
        self.sigma = random_permutation(len(self.ids))
        with Engine(_key(), self.n_jobs) as engine:
            self.ring(engine)
        t1 = time.perf_counter()
        if self.j == self.L:
            self.match()
            pos = self.recv_positions(self.parties[(self.L - 1) % self.n], "untau", len(self.ids))
        else:
            if (self.L - 1) % self.n == self.j:
                self.unshuffle_for_leader()
            pos = self.recv_positions(self.leader, "res", len(self.ids))
        out = self.sigma[pos]
        log.info(
            "psi: %s: %d parties, sizes %s, intersection %d, %.2f s (ring %.2f s)",
            self.me, self.n, dict(zip(self.parties, self.size)), out.size,
            time.perf_counter() - t0, t1 - t0,
        )
        return out


def _key() -> bytes:
    from hefl.psi._curve import new_key

    return new_key()


def ecdh_psi(
    ctx: Any,
    ids: list[str],
    *,
    peers: list[str],
    batch_size: int,
    n_jobs: int | None,
    leader: str | None,
    timeout: float | None,
) -> np.ndarray:
    """Run ECDH-PSI; return positions into ``ids`` of the shared IDs, in the common order.

    Parameters
    ----------
    ctx : PartyContext
        Already namespaced (tags are used as given).
    ids : list of str
        Distinct IDs.
    peers : list of str
        The other parties taking part (at least one).
    batch_size, n_jobs, leader, timeout
        See :func:`hefl.psi.intersect`.

    Returns
    -------
    numpy.ndarray of int64
    """
    return _Ring(
        ctx, ids, peers=peers, batch_size=batch_size, n_jobs=n_jobs, leader=leader, timeout=timeout
    ).run()
