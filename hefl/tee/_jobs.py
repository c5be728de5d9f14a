"""Glue between the job runner (``tee:`` section) and the TEE aggregator.

* embedded runs (``hefl run JOB``) without ``tee.trusted_root``: the launcher makes one
  fresh simulated root before the party processes fork (:func:`prepare_embedded`); only
  the aggregator's process uses its private half.
* multi-host runs (``--party``): data parties need ``tee.trusted_root``; the aggregator
  (simulated provider) needs ``tee.signing_key``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hefl.errors import ConfigError

from .aggregator import TeeAggregator, TeeClient, channel_public_key
from .attestation import SimulatedProvider, measure
from .policy import Policy

__all__ = ["aggregator_config", "job_measurement", "prepare_embedded", "run_lr_role"]

log = logging.getLogger(__name__)

_EMBEDDED_KEY: bytes | None = None  # set in the launcher before forking (simulated only)


def prepare_embedded(job: Any) -> None:
    """Launcher side of an embedded run: a fresh simulated root unless the job names one."""
    global _EMBEDDED_KEY
    tee = job.config.tee
    if tee is not None and tee.trusted_root is None and tee.signing_key is None:
        import secrets

        _EMBEDDED_KEY = secrets.token_bytes(32)  # an Ed25519 private key is any 32 bytes


def aggregator_config(job: Any) -> dict:
    """What the aggregator's measurement covers besides its code: the computation it hosts."""
    p = job.model_params().model_dump()
    he = job.config.he
    tee = job.config.tee
    return {
        "service": "hetero_lr.arbiter",
        "aggregator": _aggregator_name(job),
        "data_parties": [job.active, *job.passive],
        "he": {"scheme": he.scheme, "key_size": he.key_size, "allow_insecure": he.allow_insecure},
        "lr": {k: p.get(k) for k in ("max_iter", "batch_size", "tol") if k in p},
        "audit_log": tee.audit_log if tee else None,
    }


def job_measurement(job: Any) -> str:
    """The measurement an aggregator running this copy of hefl with ``job`` reports."""
    return measure(aggregator_config(job))


def _aggregator_name(job: Any) -> str:
    tee = job.config.tee
    name = (tee.aggregator if tee is not None else None) or job.arbiter
    if name is None:
        raise ConfigError("the tee section needs an arbiter party")
    return name


def _provider(job: Any) -> SimulatedProvider:
    tee = job.config.tee
    if tee.signing_key is not None:
        text = job.resolve(tee.signing_key).read_text().strip()
        try:
            return SimulatedProvider(bytes.fromhex(text))
        except ValueError:
            raise ConfigError(f"tee.signing_key {tee.signing_key!r}: expected 64 hex digits") from None
    if _EMBEDDED_KEY is None:
        raise ConfigError("tee.signing_key is needed to run the aggregator on its own host")
    return SimulatedProvider(_EMBEDDED_KEY)


def _root(job: Any) -> bytes:
    tee = job.config.tee
    if tee.trusted_root is not None:
        return bytes.fromhex(tee.trusted_root)
    if tee.signing_key is not None and _EMBEDDED_KEY is None:
        return _provider(job).root()
    if _EMBEDDED_KEY is None:
        raise ConfigError("tee.trusted_root is needed to verify the aggregator from another host")
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.from_private_bytes(_EMBEDDED_KEY).public_key()
    return pub.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def _allowed(job: Any) -> list[str]:
    out = []
    for m in job.config.tee.allowed_measurements:
        out.append(job_measurement(job) if m == "local" else m.lower())
    return out


def run_lr_role(job: Any, name: str, role: str, ctx: Any, run_role: Any, wrap: Any) -> Any:
    """Run ``run_role(context)`` for party ``name`` through the TEE aggregator.

    The aggregator hosts the arbiter (``run_role`` is then ``Arbiter(cfg).run``); a data
    party attests the aggregator, sends its policy, runs its role, receives the final log
    head and writes every head it received to ``OUTPUT/<party>/tee_heads.json``.
    """
    tee = job.config.tee
    agg_name = _aggregator_name(job)
    out_dir = job.output / name
    out_dir.mkdir(parents=True, exist_ok=True)
    if not channel_public_key(ctx.channel):
        raise ConfigError("the tee section needs CurveZMQ between the parties (curve_public_key / "
                          "curve_secret_key for every party): the quote binds the aggregator's channel key")
    if name == agg_name:
        agg = TeeAggregator(_provider(job), job_measurement(job), [job.active, *job.passive],
                            out_dir / tee.audit_log)
        try:
            g = agg.attach(ctx)
            result = run_role(wrap(g))
            agg.finish()
        finally:
            agg.log.close()
        log.info("audit log: %s (%d entries)", out_dir / tee.audit_log, agg.log.head["seq"])
        return result
    pol = tee.policies[name]
    client = TeeClient(agg_name, Policy.of(pol.allow, pol.max_rounds), root=_root(job),
                       allowed=_allowed(job), max_age=tee.max_quote_age)
    g = client.attach(ctx)
    try:
        result = run_role(wrap(g))
        client.finish()
    finally:
        from hefl._atomic import atomic_write_text

        atomic_write_text(out_dir / "tee_heads.json", json.dumps(
            {"aggregator": agg_name, "claims": client.claims, "heads": client.heads}, indent=1))
    return result
