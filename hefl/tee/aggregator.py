"""The TEE aggregator service and its client side.

:class:`TeeAggregator` is a party of the federation (e.g. ``"arbiter"``) that

1. **attests** itself to every data party before anything else is exchanged: each party
   sends a fresh nonce, the aggregator answers with a quote binding its code
   measurement, its CURVE public key (the one the party's encrypted link is pinned to)
   and the nonce (:mod:`hefl.tee.attestation`);
2. receives each party's **data-use policy** (:mod:`hefl.tee.policy`);
3. hosts a computation — the hetero-LR arbiter role (:meth:`TeeAggregator.run_arbiter`:
   it generates and keeps the HE secret key) or a masked-sum aggregation
   (:meth:`TeeAggregator.secure_sum`) — through a guarded channel that classifies every
   message by its tag, refuses what a policy does not allow (a :class:`PolicyError`
   sent to the data parties, logged, then raised), and appends every operation to the
   hash-chained **audit log** (:mod:`hefl.tee.chain`) with sha256 digests of what
   came in and went out;
4. sends every data party the log head after each round and at the end.

:class:`TeeClient` is the data party's side: it verifies the quote (allow-list, trusted
root, nonce, channel key), sends the policy, turns a refusal into a ``PolicyError``
raised in the party, and keeps the heads it received (to check the log later).

Role code does not change: both sides hand it an ordinary
:class:`~hefl.federation.PartyContext` whose channel is wrapped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from hefl.errors import DataError, PolicyError, ProtocolError, TimeoutError, TransportError
from hefl.federation import PartyContext

from .attestation import (
    DEFAULT_MAX_AGE,
    AttestationError,
    AttestationProvider,
    Quote,
    new_nonce,
    verify_quote,
)
from .chain import AuditLog, digest
from .policy import CONTROL_OPS, OPERATIONS, Policy, classify

__all__ = ["TeeAggregator", "TeeClient", "channel_public_key", "decode_sum", "masked_sum_share",
           "pinned_peer_key", "secure_sum_client"]

log = logging.getLogger(__name__)

_POLL = 0.25  # s: how often a waiting party looks for a refusal from the aggregator


def _z85_text(k: Any) -> str:
    return k.decode("ascii") if isinstance(k, (bytes, bytearray)) else str(k)


def channel_public_key(channel: Any) -> str:
    """This channel's own CURVE public key (Z85), ``""`` when it runs in plaintext."""
    cur = getattr(channel, "_curve", None)
    return _z85_text(cur["public"]) if cur else ""


def pinned_peer_key(channel: Any, peer: str) -> str:
    """The CURVE public key (Z85) this channel accepts for ``peer``, ``""`` in plaintext."""
    cur = getattr(channel, "_curve", None)
    return _z85_text(cur["peers"][peer]) if cur else ""


class _Proxy:
    """A channel proxy: everything not overridden goes to the wrapped channel."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def self_name(self) -> str:
        return self._inner.self_name

    @property
    def peers(self) -> list[str]:
        return self._inner.peers

    def send(self, peer: str, tag: str, obj: Any) -> None:
        self.multicast([peer], tag, obj)

    def recv(self, peer: str, tag: str, timeout: float | None = None) -> Any:
        return self.recv_many([peer], tag, timeout)[peer]


# ----------------------------------------------------------------------------- aggregator


class _GuardedChannel(_Proxy):
    def __init__(self, inner: Any, agg: TeeAggregator) -> None:
        super().__init__(inner)
        self._agg = agg

    def multicast(self, peers: Sequence[str], tag: str, obj: Any) -> None:
        peers = list(peers)
        op, rnd = classify(tag)
        self._agg._authorize(op, rnd, peers, tag)
        self._inner.multicast(peers, tag, obj)
        self._agg.log.append(who=",".join(peers), op=op, direction="out",
                             outputs={tag: digest(obj)}, note=f"round {rnd}" if rnd else "")
        if op == "lr.loss" and rnd is not None:
            self._agg._round_done(rnd)

    def recv_many(self, peers: Sequence[str], tag: str, timeout: float | None = None) -> dict[str, Any]:
        peers = list(peers)
        op, rnd = classify(tag)
        self._agg._authorize(op, rnd, peers, tag)
        out = self._inner.recv_many(peers, tag, timeout)
        for p in peers:
            self._agg.log.append(who=p, op=op, direction="in", inputs={tag: digest(out[p])},
                                 note=f"round {rnd}" if rnd else "")
        return out


_EPOCH_RE = re.compile(r"(p\d+)/e(\d+)")  # a training round: problem, epoch


class TeeAggregator:
    """The attested aggregator: attestation, policies, audit log around a hosted role.

    Parameters
    ----------
    provider : AttestationProvider
        Produces the quotes (:class:`~hefl.tee.attestation.SimulatedProvider` in development).
    measurement : str
        This aggregator's code measurement (:func:`~hefl.tee.attestation.measure`).
    data_parties : sequence of str
        The parties that must attest it and state a policy before anything else.
    log_path : path
        Where the audit log (JSON lines) is written.
    grace : float
        After a refusal, how long to wait for the data parties to read it (s).
    """

    def __init__(self, provider: AttestationProvider, measurement: str, data_parties: Sequence[str],
                 log_path: str | Path, *, grace: float = 10.0) -> None:
        self.provider = provider
        self.measurement = measurement
        self.data_parties = list(data_parties)
        self.log = AuditLog(log_path)
        self.grace = float(grace)
        self.policies: dict[str, Policy] = {}
        self._rounds: dict[str, dict[str, int]] = {}  # party -> problem or sum -> rounds implied
        self._ctx: PartyContext | None = None
        self._closed = False

    # -------------------------------------------------------------- setup
    def attach(self, ctx: PartyContext) -> PartyContext:
        """Attest to every data party, collect their policies; return the guarded context.

        Tags of this handshake live under ``ctx``'s namespace (``tee/...``).
        """
        self._ctx = ctx
        me = ctx.self_name
        key = channel_public_key(ctx.channel)
        if not key:
            log.warning("TEE aggregator %s runs without CurveZMQ: the quote binds no channel key", me)
        self.log.append(who=me, op="audit.open", outcome="ok",
                        outputs={"log_key": self.log.public_key, "measurement": self.measurement,
                                 "channel_key": key, "provider": self.provider.name},
                        note=f"TEE aggregator {me!r}; data parties {', '.join(self.data_parties)}"
                             + ("" if self.provider.hardware else "; SIMULATED attestation (no hardware protection)"))
        nonces = ctx.gather("tee/nonce", peers=self.data_parties)
        for p in self.data_parties:
            n = nonces[p]
            if not isinstance(n, bytes) or len(n) != 32:
                raise ProtocolError("the attestation nonce must be 32 bytes", peer=p, tag=ctx.tag("tee/nonce"))
            q = self.provider.quote(measurement=self.measurement, channel_key=key, nonce=n,
                                    log_key=self.log.public_key)
            ctx.send(p, "tee/quote", q.to_wire())
            self.log.append(who=p, op="tee.attest", direction="out", inputs={"nonce": digest(n)},
                            outputs={"quote": digest(q.body + q.evidence)})
        pols = ctx.gather("tee/policy", peers=self.data_parties)
        for p in self.data_parties:
            pol = Policy.from_wire(pols[p], peer=p, tag=ctx.tag("tee/policy"))
            self.policies[p] = pol
            self.log.append(who=p, op="tee.policy", direction="in", inputs={"policy": digest(pols[p])},
                            note=f"allow {sorted(pol.allow)}; max_rounds {pol.max_rounds}")
        ctx.broadcast("tee/ready", self.log.head, peers=self.data_parties)
        return PartyContext(cast(Any, _GuardedChannel(ctx.channel, self)), ctx.prefix, recv_timeout=ctx._recv_timeout)

    # -------------------------------------------------------------- hosted computations
    def run_arbiter(self, ctx: PartyContext, config: Any, *, wrap: Any = None) -> dict:
        """Host the hetero-LR ``Arbiter`` role (it generates and keeps the HE key).

        ``wrap`` optionally wraps the guarded context once more (e.g. progress reporting).
        """
        from hefl.models.hetero_lr import Arbiter

        g = self.attach(ctx)
        out = Arbiter(config).run(wrap(g) if wrap else g)
        self.finish()
        return out

    def secure_sum(self, ctx: PartyContext, name: str, parties: Sequence[str] | None = None) -> np.ndarray:
        """One masked-sum round over the guarded context ``ctx`` (from :meth:`attach`).

        Each party sends ``tee/sum/<name>/in``: its vector plus pairwise masks that cancel
        in the sum (:func:`masked_sum_share`), as ``uint64`` fixed-point words mod 2^64.
        The aggregator adds them (mod 2^64), sends the sum back under ``tee/sum/<name>/out``
        and returns it; it never sees an unmasked individual vector.
        """
        parties = list(parties or self.data_parties)
        shares = ctx.gather(f"tee/sum/{name}/in", peers=parties)
        total = None
        for p in parties:
            s = shares[p]
            if not isinstance(s, np.ndarray) or s.dtype != np.uint64 or s.ndim != 1:
                raise ProtocolError("a masked share must be a 1-d uint64 array", peer=p,
                                    tag=ctx.tag(f"tee/sum/{name}/in"))
            if total is not None and s.shape != total.shape:
                raise ProtocolError(f"share of shape {s.shape}, expected {total.shape}", peer=p,
                                    tag=ctx.tag(f"tee/sum/{name}/in"))
            total = s.copy() if total is None else total + s  # uint64 wraps: mod 2^64
        assert total is not None
        ctx.broadcast(f"tee/sum/{name}/out", total, peers=parties)
        self._round_done(f"sum:{name}", parties)
        return total

    def finish(self, outcome: str = "ok", note: str = "") -> None:
        """Close the log (``audit.close``) and send the final head to the data parties."""
        if self._closed:
            return
        self._closed = True
        self.log.append(who=self._ctx.self_name if self._ctx else "", op="audit.close", outcome=outcome,
                        note=note or "run finished")
        head = self.log.head
        self.log.close()
        if self._ctx is not None and outcome == "ok":
            self._ctx.broadcast("tee/final", head, peers=self.data_parties)

    # -------------------------------------------------------------- policy
    def _authorize(self, op: str, rnd: str | None, peers: list[str], tag: str) -> None:
        if op in CONTROL_OPS:
            return
        for p in peers:
            pol = self.policies.get(p)
            if pol is None:
                self._refuse(p, op, tag, f"party {p!r} stated no data-use policy")
            if op == "unknown":
                self._refuse(p, op, tag, "no operation of the aggregator explains this message")
            if op not in pol.allow:
                self._refuse(p, op, tag, f"its policy allows only {sorted(pol.allow)}")
            if rnd is not None:
                # rounds counted by what they imply: epoch e of a problem means its epochs
                # 0..e took place, in this process or in the run it resumes
                used = self._rounds.setdefault(p, {})
                m = _EPOCH_RE.fullmatch(rnd)
                key, count = (m.group(1), int(m.group(2)) + 1) if m else (rnd, 1)
                had = used.get(key, 0)
                if count > had:
                    total = sum(used.values()) - had + count
                    if pol.max_rounds is not None and total > pol.max_rounds:
                        self._refuse(p, op, tag, f"round {rnd} would exceed its limit of "
                                                 f"{pol.max_rounds} round(s) ({total} with the rounds "
                                                 "before it)")
                    used[key] = count

    def _refuse(self, party: str, op: str, tag: str, reason: str) -> NoReturn:
        me = self._ctx.self_name if self._ctx else "aggregator"
        what = OPERATIONS.get(op, "an unexplained message")
        msg = (f"TEE aggregator {me!r} refused {op!r} ({what}) on party {party!r}'s data under its "
               f"data-use policy: {reason} (tag {tag!r})")
        log.error("%s", msg)
        self.log.append(who=party, op=op, outcome="refused", note=msg)
        self.finish(outcome="refused", note=msg)
        ctx = self._ctx
        if ctx is not None:
            inner = ctx.channel._inner if isinstance(ctx.channel, _GuardedChannel) else ctx.channel
            for p in self.data_parties:
                try:
                    inner.send(p, ctx.tag("tee/refused"), msg)
                except (TransportError, ProtocolError):
                    pass
            # give the parties time to read it before our channel closes
            deadline = time.monotonic() + self.grace
            for p in self.data_parties:
                try:
                    inner.recv(p, ctx.tag("tee/drain"), max(0.01, deadline - time.monotonic()))
                except TransportError:
                    pass
        raise PolicyError(msg)

    def _round_done(self, rnd: str, peers: Sequence[str] | None = None) -> None:
        if self._ctx is None:
            return
        seg = rnd.replace("/", ".")
        self._ctx.broadcast(f"tee/head/{seg}", self.log.head, peers=list(peers or self.data_parties))


# ----------------------------------------------------------------------------- client


class _ClientChannel(_Proxy):
    def __init__(self, inner: Any, client: TeeClient, prefix: str) -> None:
        super().__init__(inner)
        self._c = client
        self._prefix = prefix

    def multicast(self, peers: Sequence[str], tag: str, obj: Any) -> None:
        try:
            self._inner.multicast(list(peers), tag, obj)
        except TransportError as exc:
            self._c._raise_if_refused(self._inner, self._prefix, exc)
            raise

    def recv_many(self, peers: Sequence[str], tag: str, timeout: float | None = None) -> dict[str, Any]:
        peers = list(peers)
        agg = self._c.aggregator
        total = self._inner.recv_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        while True:
            remaining = deadline - time.monotonic()
            try:
                out = self._inner.recv_many(peers, tag, max(0.0, min(_POLL, remaining)) if remaining > 0 else 0.0)
                break
            except TimeoutError as exc:
                self._c._raise_if_refused(self._inner, self._prefix, exc)
                if remaining <= _POLL:
                    raise
            except TransportError as exc:
                self._c._raise_if_refused(self._inner, self._prefix, exc)
                raise
        if agg in peers:
            op, rnd = classify(tag)
            if op in ("lr.loss", "secure_sum") and rnd is not None and not tag.endswith("/in"):
                self._c._take_head(self._inner, self._prefix + f"tee/head/{rnd.replace('/', '.')}")
        return out


class TeeClient:
    """A data party's side of the TEE aggregator.

    Parameters
    ----------
    aggregator : str
        The aggregator's party name.
    policy : Policy
        What this party allows the aggregator to do with its data.
    root : bytes
        Trusted root of the attestation provider (the simulated provider's public key).
    allowed : sequence of str
        Accepted code measurements.
    max_age : float
        Freshness bound of a quote (s).
    channel_key : str, optional
        The aggregator's CURVE public key the quote must bind (default: the key this
        party's channel is pinned to for the aggregator; ``""`` on a plaintext channel).
    """

    def __init__(self, aggregator: str, policy: Policy, *, root: bytes, allowed: Sequence[str],
                 max_age: float = DEFAULT_MAX_AGE, channel_key: str | None = None) -> None:
        self.aggregator = aggregator
        self.policy = policy
        self.root = root
        self.allowed = list(allowed)
        self.max_age = float(max_age)
        self.channel_key = channel_key
        self.claims: dict | None = None
        self.heads: list[dict] = []
        self._ctx: PartyContext | None = None

    def attach(self, ctx: PartyContext) -> PartyContext:
        """Verify the aggregator's quote, send the policy; return the context to run roles on.

        Raises
        ------
        AttestationError
            The quote did not verify (nothing but the nonce was sent to the aggregator).
        """
        agg = self.aggregator
        nonce = new_nonce()
        ctx.send(agg, "tee/nonce", nonce)
        tag = ctx.tag("tee/quote")
        try:
            quote = Quote.from_wire(ctx.recv(agg, "tee/quote"))
            key = self.channel_key if self.channel_key is not None else pinned_peer_key(ctx.channel, agg)
            if not key:
                log.warning("%s: the link to the TEE aggregator %s is not CurveZMQ-encrypted; its quote "
                            "binds no channel key", ctx.self_name, agg)
            self.claims = verify_quote(quote, root=self.root, allowed=self.allowed, nonce=nonce,
                                       channel_key=key, max_age=self.max_age)
        except AttestationError as exc:
            raise AttestationError(f"party {ctx.self_name!r} rejects the TEE aggregator's quote: "
                                   f"{str(exc).split(' (peer')[0]}", peer=agg, tag=tag) from None
        log.info("%s: TEE aggregator %s attested (provider %s, measurement %s…)", ctx.self_name, agg,
                 self.claims["provider"], self.claims["measurement"][:16])
        ctx.send(agg, "tee/policy", self.policy.to_wire())
        ready = ctx.recv(agg, "tee/ready")
        self._check_head(ready, ctx.tag("tee/ready"))
        self._ctx = ctx
        return PartyContext(cast(Any, _ClientChannel(ctx.channel, self, ctx.prefix)), ctx.prefix,
                            recv_timeout=ctx._recv_timeout)

    def finish(self) -> dict:
        """Receive the aggregator's final log head (after the role finished)."""
        assert self._ctx is not None, "attach() first"
        head = self._ctx.recv(self.aggregator, "tee/final")
        self._check_head(head, self._ctx.tag("tee/final"))
        self.heads.append(head)
        return head

    def _check_head(self, h: Any, tag: str) -> dict:
        if not (isinstance(h, dict) and isinstance(h.get("seq"), int) and isinstance(h.get("hash"), str)
                and len(h["hash"]) == 64):
            raise ProtocolError(f"malformed audit-log head {h!r}", peer=self.aggregator, tag=tag)
        if self.heads and h["seq"] < self.heads[-1]["seq"]:
            raise ProtocolError("the audit log shrank (head went back from "
                                f"{self.heads[-1]['seq']} to {h['seq']} entries)", peer=self.aggregator, tag=tag)
        return h

    def _take_head(self, inner: Any, tag: str) -> None:
        h = self._check_head(inner.recv(self.aggregator, tag), tag)
        self.heads.append(h)

    def _raise_if_refused(self, inner: Any, prefix: str, exc: BaseException) -> None:
        tag = prefix + "tee/refused"
        try:
            pending = tag in inner.pending_tags(self.aggregator)
        except Exception:  # noqa: BLE001
            pending = False
        if pending:
            msg = inner.recv(self.aggregator, tag, 1.0)
            raise PolicyError(str(msg)) from exc


def masked_sum_share(ctx: PartyContext, vector: np.ndarray, parties: Sequence[str], name: str,
                     *, frac_bits: int = 32) -> np.ndarray:
    """A party's masked share for :meth:`TeeAggregator.secure_sum` (call on the party side).

    Every pair of parties agrees a random mask over their direct (encrypted) link: the
    party that sorts first draws it and sends it to the other; the first adds it, the
    second subtracts it, so all masks cancel in the sum. Values are fixed point
    ``round(x * 2^frac_bits)`` as ``uint64`` mod 2^64 (:func:`decode_sum` decodes).
    """
    me = ctx.self_name
    v = np.asarray(vector, dtype=np.float64)
    # the sum of every party's values must stay inside the signed 64-bit fixed point
    limit = 2.0 ** (63 - frac_bits) / max(1, len(parties))
    bad = np.flatnonzero(~(np.abs(v) < limit))  # NaN and ±inf too
    if bad.size:
        raise DataError(f"secure_sum {name!r}: value {v.ravel()[bad[0]]!r} at position {int(bad[0])} "
                        f"({bad.size} in all) is not finite or not below {limit:.4g} in magnitude "
                        f"({frac_bits} fractional bits, {len(parties)} parties)")
    share = np.round(v * float(1 << frac_bits)).astype(np.int64).view(np.uint64)
    others = [p for p in parties if p != me]
    for p in others:
        tag = f"tee/mask/{name}/{min(me, p)}-{max(me, p)}"
        if me < p:
            # masks from the OS CSPRNG (uniform over 2^64: the sum mod 2^64 hides each value)
            m = np.frombuffer(os.urandom(8 * max(1, v.size)), dtype=np.uint64)[: v.size].reshape(v.shape)
            ctx.send(p, tag, m)
            share = share + m
        else:
            m = ctx.recv(p, tag)
            share = share - np.asarray(m, dtype=np.uint64)
    return share


def decode_sum(total: np.ndarray, frac_bits: int = 32) -> np.ndarray:
    """Decode a :meth:`TeeAggregator.secure_sum` result to floats."""
    return np.asarray(total, dtype=np.uint64).view(np.int64).astype(np.float64) / float(1 << frac_bits)


def secure_sum_client(ctx: PartyContext, aggregator: str, vector: np.ndarray, parties: Sequence[str],
                      name: str, *, frac_bits: int = 32) -> np.ndarray:
    """Party side of one secure-sum round: send the masked share, return the decoded sum."""
    share = masked_sum_share(ctx, vector, parties, name, frac_bits=frac_bits)
    ctx.send(aggregator, f"tee/sum/{name}/in", share)
    return decode_sum(ctx.recv(aggregator, f"tee/sum/{name}/out"), frac_bits)
