"""Role classes of hetero LR: :class:`ActiveParty`, :class:`PassiveParty`, :class:`Arbiter`.

Each role gets a :class:`~hefl.federation.PartyContext` and never touches a socket; the
same code runs in threads (tests), in local processes (the estimators) and across hosts.

Notation: the active party A holds ``X_A`` and the labels, passive party k holds ``X_k``;
``u_A = X_A w_A + b``, ``u_k = X_k w_k``, ``U = Σ_k u_k``.  With ``(ℓ₀, s, h)`` from
:func:`~hefl.models.hetero_lr._core.expand_loss` the residual is ``d = s + h·U`` and
the gradients are ``g_A = X_Aᵀ d`` (+ ``Σ d`` for the intercept) and ``g_k = X_kᵀ d``.

Protocol ``"two_party"`` (no third party; every party holds its own key pair)
-------------------------------------------------------------------------------
Per mini-batch::

    A → k   [[s]]_A, [[h]]_A                       (A's residual terms, under A's key)
    k → A   [[u_k]]_k                              (k's score, under k's key)
    k       [[d]]_A = [[s]] + u_k ⊙ [[h]] (+ the other passives' [[h ⊙ u_l]], re-randomised)
    k → A   [[X_kᵀ d + r_k]]_A, [[Σ d·u_k + 2n·pen_k]]_A     (r_k uniform mask)
    A → k   [[X̃_Aᵀ u_k + r_A]]_k   with X̃_A = [X_A ⊙ h, h, s]   (r_A uniform mask)
    A → k   X_kᵀ d + r_k      (decrypted, still masked)   → k removes r_k: its gradient
    k → A   X̃_Aᵀ u_k + r_A    (decrypted, still masked)   → A removes r_A
    A       g_A = X_Aᵀ s + Σ_k X_Aᵀ(h ⊙ u_k); loss from its own terms and the opened pieces

So the residual ``d`` is never in the clear anywhere: it only exists as the sum of A's
plaintext part ``s`` and the encrypted cross term ``h ⊙ U`` (an additive sharing between
A's plaintext and k's ciphertexts); each party learns its own gradient and nothing else
of the others' but masked values.  CKKS (one passive party) computes
``X_kᵀ[[s]] + (X_k ⊙ u_k)ᵀ[[h]]`` instead of the elementwise product (depth).

Protocol ``"arbiter"`` (Hardy et al.; the arbiter holds the only key)
----------------------------------------------------------------------
Per mini-batch::

    C → A, k  fresh encryptions of 0 under C's key  (Paillier: the randomness A and k use;
              C's CRT key makes them about twice as cheap, and C is otherwise idle)
    k → A   [[u_k]]_C, ρ_k                 (ρ_k: k's loss mask)
    A → k   [[d]]_C = Enc(s) + h ⊙ Σ[[u_k]]    (CKKS: [[s]]_C, [[h]]_C)
    A → C   [[X̃_Aᵀ U + r_A]]_C, [[ΣsU + 2Σℓ₀ + 2n·pen_A − Σρ_k]]_C
    k → C   [[X_kᵀ d + r_k]]_C, [[Σ d·u_k + 2n·pen_k + ρ_k]]_C
    C → A   X̃_Aᵀ U + r_A     C → k   X_kᵀ d + r_k     (decrypted, still masked)
    C       batch loss = ½ Σ of the opened loss pieces (only their sum is unmasked)

The arbiter sees masked gradients and the loss; it decides early stopping.  This is the
role the TEE aggregator will host.

Checkpoints and resume
----------------------
With a :class:`~hefl.checkpoint.Checkpointer` every party saves its own state after each
epoch (after the epoch's ``stop`` flag: no ciphertext and no mask outlives an epoch in
either protocol or scheme, so nothing encrypted is saved and every key pair is simply
made afresh on resume).  The step of a checkpoint is the number of epochs done over all
one-vs-rest problems so far.  Saved: active ``w``, ``b``, optimiser state, losses, epoch
times and the finished problems' results; passive ``w``, optimiser state and finished
problems' weights; arbiter the loss curves.  Stop decisions are saved too, so a problem
that had stopped is not trained further.  Between ``setup`` and the keys::

    k, C → A   offer/setup   [[run_id, step], …]  (checkpoints matching the party's inputs;
                                                  empty unless setup asked to resume)
    A → k, C   start/setup   {run_id, step}       (the newest common one, or a new run at 0)

A party asked to start from a checkpoint it does not hold raises :class:`ProtocolError`.
(Both tags end in ``setup``: the TEE aggregator's policy classifies them as ``lr.setup``.)
Only ``(run_id, step)`` pairs cross the network.

What each party learns (semi-honest, non-colluding): its own gradient per batch; A the batch
loss (two party) or C the batch loss (arbiter); in the two-party protocol A also opens the
sum of the passive parties' loss pieces ``Σ d·u_k + 2n·pen_k``, and with several passive
parties A learns each one's contribution ``X̃_Aᵀ u_k`` to its gradient separately; all
parties the number of rows, columns per party, classes and the shared batch-order seed.
Nobody receives another party's features, weights, gradients, labels or residuals in the
clear.  As in every such protocol, a party's own per-batch gradients are functions of the
labels and of the other parties' scores.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hefl.checkpoint import Checkpointer, fingerprint, new_run_id, parse_offer
from hefl.errors import DataError, ProtocolError
from hefl.models._parties import MAX_FEATURES

from ._core import (
    LRConfig,
    batch_slices,
    converged,
    expand_loss,
    make_optimizer,
    penalty_value,
)
from ._engine import (
    FRAC_D,
    FRAC_ENC,
    LOSS_EXP,
    keygen,
    load_public_kit,
    make_engine,
    negated_sum,
    next_pow2,
    open_for_peer,
)

__all__ = ["ActiveParty", "Arbiter", "PassiveParty"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers


def _publish_key(ctx, cfg: LRConfig, peers: list[str]):
    """Generate this party's key pair, send the public kit's bytes to ``peers``."""
    kit = keygen(cfg.he, cfg.key_size, backend=cfg.backend, allow_insecure=cfg.allow_insecure,
                 n_jobs=cfg.n_jobs)
    # a kit's to_bytes() is its public part only (for CKKS: the context without the secret
    # key); registering the kit locally lets this party read ciphertexts under its own key
    ctx.register_kit(kit)
    if peers:
        ctx.broadcast("pubkey", kit.to_bytes(), peers=peers)
    return kit


def _peer_key(ctx, cfg: LRConfig, data: Any, peer: str):
    if not isinstance(data, bytes):
        raise ProtocolError("public kit must arrive as bytes", peer=peer, tag="pubkey")
    kit = load_public_kit(cfg.he, data, backend=cfg.backend, allow_insecure=cfg.allow_insecure,
                          n_jobs=cfg.n_jobs)
    ctx.register_kit(kit)
    return kit


def _check_setup(setup: Any, peer: str, parties: Sequence[str] = (), own: tuple[str, int] | None = None) -> dict:
    """The active party's setup; ``parties`` must each have a column count in
    ``[0, MAX_FEATURES]``, and ``own`` = (this party, its feature count) must match."""
    ok = isinstance(setup, dict) and all(
        isinstance(setup.get(k), int) and not isinstance(setup.get(k), bool)
        for k in ("seed", "n_problems", "width", "n_samples")
    ) and isinstance(setup.get("columns"), dict)
    if not ok or setup["n_problems"] < 1 or setup["width"] < 1 or setup["n_samples"] < 1:
        raise ProtocolError(f"malformed setup message {setup!r}", peer=peer, tag="setup")
    cols = setup["columns"]
    for p in parties:
        c = cols.get(p)
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= MAX_FEATURES:
            raise ProtocolError(f"setup lacks a valid column count of {p!r} (got {c!r})", peer=peer, tag="setup")
    if own is not None and cols.get(own[0]) != own[1]:
        raise ProtocolError(f"setup says {own[0]!r} has {cols.get(own[0])!r} columns, it has {own[1]}",
                            peer=peer, tag="setup")
    return setup


def _as_matrix(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{name}: features must be a 2-d array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name}: features contain NaN or infinity")
    return np.ascontiguousarray(X)


def _next_batch_size(batches: list, bi: int, epoch: int, cfg: LRConfig, n: int) -> int:
    """Rows of the next batch (0 after the last one): how many obfuscators to precompute."""
    if bi + 1 < len(batches):
        return len(batches[bi + 1])
    return min(cfg.batch_size, n) if epoch + 1 < cfg.max_iter else 0


def _cipher(obj: Any, kit: Any, peer: str, tag: str) -> Any:
    """``obj`` must be a cipher array under ``kit``'s public key."""
    from hefl.he.base import CipherArray
    from hefl.he.ckks import CKKSArray

    if not isinstance(obj, (CipherArray, CKKSArray)) or not kit.same_key(obj.kit):
        raise ProtocolError(f"expected ciphertexts under {kit!r}, got {type(obj).__name__}", peer=peer, tag=tag)
    return obj


def _shaped(ca: Any, shape: tuple[int, ...], peer: str, tag: str) -> Any:
    """A received additive cipher array of exactly ``shape``: no more is decrypted for a peer
    than the counts agreed at setup (a CKKS vector holds its values in padded slots)."""
    from hefl.he.ckks import CKKSArray

    if isinstance(ca, CKKSArray):
        return ca
    if tuple(ca.shape) != shape:
        raise ProtocolError(f"expected ciphertexts of shape {shape}, got {tuple(ca.shape)}", peer=peer, tag=tag)
    return ca


def _zeros(obj: Any, kit: Any, peer: str, n: int, frac_bits: int) -> Any:
    """Fresh encryptions of zero supplied by the arbiter: right key, length and scale."""
    z = _cipher(obj, kit, peer, "z")
    if z.shape != (n,) or z.frac_bits != frac_bits:
        raise ProtocolError(f"expected {n} encryptions of zero at scale 2^-{frac_bits}", peer=peer, tag="z")
    return z


def _open_gradients(bctx, eng, kit, peers: list[str], cols: dict) -> list:
    """Key owner: gather each peer's masked gradient ciphertexts ("g"), send each its opened
    (still masked) gradient ("gd"); returns the opened loss pieces that follow them."""
    g = bctx.gather("g", peers=peers)
    rows: list = []
    for p in peers:
        # exactly the peer's gradient and its loss piece: the key owner opens nothing else
        gp = _shaped(_cipher(g[p], kit, p, "g"), (cols[p] + 1,), p, bctx.tag("g"))
        back, rest = open_for_peer(eng, kit, gp, cols[p])
        bctx.send(p, "gd", back)
        rows += rest
    return rows


def _stop(flag: Any, peer: str) -> bool:
    if not isinstance(flag, bool):
        raise ProtocolError(f"stop flag must be a bool, got {flag!r}", peer=peer, tag="stop")
    return flag


# ----------------------------------------------------------------------------- checkpoints

#: settings that do not change the model: a checkpoint stays valid when they change
#: (``max_iter`` too: a resumed run may train longer or stop earlier)
_RUNTIME_ONLY = ("max_iter", "n_jobs", "backend", "recv_timeout")


def _config_print(cfg: LRConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_ONLY}


def _opt_state(opt) -> tuple[dict, dict[str, np.ndarray]]:
    meta, arrays = opt.get_state()
    return meta, {f"opt_{k}": v for k, v in arrays.items()}


def _set_opt_state(opt, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    opt.set_state(meta, {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")})


def _position(meta: dict, n_problems: int) -> tuple[int, int, bool]:
    """``(problem, epochs done in it, stopped)`` of a loaded checkpoint, checked."""
    c, e, stopped = meta.get("problem"), meta.get("epoch"), meta.get("stopped")
    if not (isinstance(c, int) and isinstance(e, int) and isinstance(stopped, bool)
            and 0 <= c < n_problems and e >= 1):
        raise DataError(f"checkpoint {meta.get('step')} does not fit this run ({n_problems} problem(s))")
    return c, e, stopped


def _join(ctx, cfg: LRConfig, setup: dict, checkpoint: Checkpointer | None, fp: str
          ) -> tuple[str, int, tuple[dict, dict] | None]:
    """Passive / arbiter side of the resume handshake: offer, then start where A says.

    Returns ``(run_id, step, state)``, ``state`` the loaded checkpoint (``None`` at step 0,
    where this party's old checkpoints are removed: a new run starts).
    """
    ask = setup.get("resume") is True and checkpoint is not None
    offer = [[rid, st] for rid, st in checkpoint.offers(fp)] if ask else []
    ctx.sub("offer").send(cfg.active, "setup", offer)
    tag = ctx.tag("start/setup")
    start = ctx.sub("start").recv(cfg.active, "setup")
    if not isinstance(start, dict) or set(start) != {"run_id", "step"}:
        raise ProtocolError(f"malformed start message {start!r}", peer=cfg.active, tag=tag)
    ((rid, step),) = parse_offer([[start["run_id"], start["step"]]], cfg.active, tag)
    if step == 0:
        if checkpoint is not None:
            checkpoint.clear()
        return rid, 0, None
    if checkpoint is None or (rid, step) not in set(checkpoint.offers(fp)):
        raise ProtocolError(f"asked to resume run {rid} after epoch {step}, which this party has no "
                            "checkpoint of", peer=cfg.active, tag=tag)
    meta, arrays = checkpoint.load(step)
    log.info("resume: continuing run %s after epoch %d", rid, step)
    return rid, step, (meta, arrays)


# ----------------------------------------------------------------------------- active


class ActiveParty:
    """The label holder: computes the residual terms, owns the intercept, leads the protocol.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features_A)
        This party's columns (may have zero columns).
    y : ndarray of shape (n_samples,) or (n_samples, n_problems)
        Targets; several columns train one-vs-rest problems one after the other.
    config : LRConfig
        The job's shared configuration.
    seed : int, optional
        Batch-order seed shared with the other parties (fresh when ``None``; when resuming,
        the seed of this party's newest checkpoint).
    checkpoint : Checkpointer, optional
        Save this party's state after every epoch (the other parties save theirs when they
        learn the epoch's stop flag); see :mod:`hefl.checkpoint`.
    resume : bool
        Continue from the newest epoch every party has a checkpoint of (trains from the
        first epoch, saying so in the log, when there is none). Needs ``checkpoint``.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, config: LRConfig, *, seed: int | None = None,
                 checkpoint: Checkpointer | None = None, resume: bool = False):
        self.cfg = config.validate()
        self.X = _as_matrix(X, config.active)
        y = np.asarray(y, dtype=np.float64)
        self.Y = y.reshape(y.shape[0], -1)
        if self.Y.shape[0] != self.X.shape[0]:
            raise DataError(f"{self.Y.shape[0]} labels for {self.X.shape[0]} rows")
        if not np.all(np.isfinite(self.Y)):
            raise DataError("labels contain NaN or infinity")
        self.seed = seed
        self.checkpoint = checkpoint
        self.resume = bool(resume) and checkpoint is not None

    def run(self, ctx) -> dict:
        cfg = self.cfg
        passives = list(cfg.passives)
        n, fa = self.X.shape
        fi = int(cfg.fit_intercept)
        shapes = ctx.gather("shape", peers=passives)
        cols = {cfg.active: fa + fi}
        for p in passives:
            sh = shapes[p]
            if not (isinstance(sh, dict) and isinstance(sh.get("n_samples"), int)
                    and isinstance(sh.get("n_features"), int) and 0 <= sh["n_features"] <= MAX_FEATURES):
                raise ProtocolError(f"malformed shape message {sh!r}", peer=p, tag="shape")
            if sh["n_samples"] != n:
                raise DataError(f"party {p!r} has {sh['n_samples']} rows, {cfg.active!r} has {n}: "
                                "align the rows (PSI) first")
            cols[p] = int(sh["n_features"])
        width = next_pow2(max([fa + fi + 1] + [cols[p] + 1 for p in passives]))
        seed = self._seed_ = self._seed()
        n_problems = int(self.Y.shape[1])
        setup = {"seed": seed, "n_problems": n_problems, "width": width, "n_samples": n,
                 "columns": cols, "resume": self.resume}
        ctx.broadcast("setup", setup)
        self.fp = fingerprint("hetero-lr-active", _config_print(cfg), seed, self.X, self.Y)
        state = self._start(ctx, n_problems)
        if cfg.protocol == "two_party":
            mine = _publish_key(ctx, cfg, passives)
            keys = ctx.gather("pubkey", peers=passives)
            peer_engs = {p: make_engine(_peer_key(ctx, cfg, keys[p], p), width=width) for p in passives}
            mine_eng = make_engine(mine, width=width)
            mine_eng.precompute(2 * min(cfg.batch_size, n))
            keys_: tuple[Any, Any, Any] = (mine, mine_eng, peer_engs)
        else:
            arbiter = str(cfg.arbiter)
            arb = _peer_key(ctx, cfg, ctx.recv(arbiter, "pubkey"), arbiter)
            arb_eng = make_engine(arb, width=width)
            keys_ = (None, arb_eng, {})
        out: dict[str, list] = {"coef": [], "intercept": [], "n_iter": [], "loss_curve": [],
                                "epoch_seconds": []}
        first = 0
        if state is not None:
            meta, arrays = state
            first = _position(meta, n_problems)[0]
            done = meta.get("finished")
            if not isinstance(done, list) or len(done) != first:
                raise DataError(f"checkpoint {self._step} lists {done!r} as finished problems before problem {first}")
            for c, res in enumerate(done):
                out["coef"].append(np.array(arrays[f"coef_{c}"], dtype=np.float64))
                out["intercept"].append(float(res["intercept"]))
                out["n_iter"].append(int(res["n_iter"]))
                out["loss_curve"].append([float(v) for v in res["loss_curve"]])
                out["epoch_seconds"].append([float(v) for v in res["epoch_seconds"]])
        self._finished = out
        for c in range(first, n_problems):
            res = self._train(ctx.sub(f"p{c}"), c, self.Y[:, c], seed, cols, keys_,
                              state if c == first else None)
            for k, v in res.items():
                out[k].append(v)
        return out

    # -- checkpoints -----------------------------------------------------------------
    def _seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        if self.resume:  # no seed given: the interrupted run's, from this party's newest checkpoint
            for st in reversed(self.checkpoint.steps()):
                try:
                    meta, _ = self.checkpoint.load(st)
                except Exception as exc:  # noqa: BLE001 - offers() warns about it; only a seed is looked for
                    log.debug("no seed from checkpoint %d: %s", st, exc)
                    continue
                if isinstance(meta.get("seed"), int) and not isinstance(meta.get("seed"), bool):
                    return int(meta["seed"])
        return secrets.randbits(62)

    def _start(self, ctx, n_problems: int) -> tuple[dict, dict] | None:
        """Agree on where training starts (every other party offers, this one picks)."""
        cfg = self.cfg
        peers = list(cfg.passives) + ([str(cfg.arbiter)] if cfg.arbiter else [])
        tag = ctx.tag("offer/setup")
        got = ctx.sub("offer").gather("setup", peers=peers)
        offers = [parse_offer(got[p], p, tag) for p in peers]
        ck = self.checkpoint
        state = None
        if self.resume:
            # a lowered max_iter: only checkpoints at or before its last epoch
            state = ck.resume_state(self.fp, offers, "epoch",
                                    keep=lambda m: int(m.get("epoch", 0)) <= int(cfg.max_iter))
            if state is not None:
                meta = state[0]
                c, e, stopped = _position(meta, n_problems)
                log.info("resume: continuing run %s after epoch %d (the newest every party has): "
                         "problem %d of %d, %d epoch(s) done%s", meta["run_id"], meta["step"], c + 1, n_problems,
                         e, ", stopped" if stopped else "")
        if state is None:
            if ck is not None:
                ck.clear()
            self.run_id, self._step = new_run_id(), 0
        else:
            self.run_id, self._step = str(state[0]["run_id"]), int(state[0]["step"])
        ctx.sub("start").broadcast("setup", {"run_id": self.run_id, "step": self._step}, peers=peers)
        return state

    def _save(self, c: int, epoch: int, stopped: bool, w: np.ndarray, b: float, opt, losses: list,
              times: list) -> None:
        self._step += 1
        if self.checkpoint is None:
            return
        done = self._finished
        opt_meta, arrays = _opt_state(opt)
        arrays["w"] = w
        for k, coef in enumerate(done["coef"]):
            arrays[f"coef_{k}"] = np.asarray(coef, dtype=np.float64)
        finished = [{"intercept": float(done["intercept"][k]), "n_iter": int(done["n_iter"][k]),
                     "loss_curve": list(done["loss_curve"][k]), "epoch_seconds": list(done["epoch_seconds"][k])}
                    for k in range(len(done["coef"]))]
        self.checkpoint.save(self._step, {
            "run_id": self.run_id, "fingerprint": self.fp, "seed": self._seed_, "problem": c, "epoch": epoch,
            "stopped": stopped, "b": float(b), "losses": list(losses), "times": list(times), "opt": opt_meta,
            "finished": finished}, arrays)

    def _train(self, pctx, prob: int, y: np.ndarray, seed: int, cols: dict, keys_: tuple[Any, Any, Any],
               state: tuple[dict, dict] | None = None) -> dict:
        cfg = self.cfg
        arbiter = str(cfg.arbiter)
        X = self.X
        n, fa = X.shape
        fi = int(cfg.fit_intercept)
        na = fa + fi
        passives = list(cfg.passives)
        two = cfg.protocol == "two_party"
        mine, eng, peer_engs = keys_
        w = np.zeros(fa)
        b = 0.0
        opt = make_optimizer(cfg, fa, cfg.fit_intercept)
        losses: list[float] = []
        times: list[float] = []
        n_iter = 0
        first, stopped = 0, False
        if state is not None:  # resumed: the state after epoch ``first`` of this problem
            meta, arrays = state
            _, first, stopped = _position(meta, self.Y.shape[1])
            w = np.array(arrays["w"], dtype=np.float64)
            if w.shape != (fa,):
                raise DataError(f"checkpoint weights of shape {w.shape}, expected {(fa,)}")
            b = float(meta["b"])
            _set_opt_state(opt, meta["opt"], arrays)
            losses = [float(v) for v in meta["losses"]]
            times = [float(v) for v in meta["times"]]
            n_iter = first
        for epoch in range(first, 0 if stopped else cfg.max_iter):
            ectx = pctx.sub(f"e{epoch}")
            t0 = time.perf_counter()
            batches = batch_slices(seed, epoch, n, cfg.batch_size)
            total = 0.0
            for bi, idx in enumerate(batches):
                bctx = ectx.sub(f"b{bi}")
                nb = len(idx)
                xa = X[idx]
                u_a = xa @ w + b
                l0, s, h = expand_loss(cfg.task, u_a, y[idx], cfg.taylor)
                pen = penalty_value(cfg.penalty, cfg.alpha, w)
                mt = np.column_stack([xa * h[:, None]] + ([h] if fi else []) + [s])
                nxt = _next_batch_size(batches, bi, epoch, cfg, n)
                if two:
                    bctx.broadcast("sh", {"s": eng.encrypt(s, FRAC_D), "h": eng.encrypt(h, FRAC_ENC)},
                                   peers=passives)
                    eng.precompute(2 * nxt)
                    enc_u = {p: _shaped(_cipher(c, peer_engs[p].kit, p, "u"), (nb,), p, bctx.tag("u"))
                             for p, c in bctx.gather("u", peers=passives).items()}
                    states = {}
                    for p in passives:
                        pe = peer_engs[p]
                        masked, states[p] = pe.mask(pe.matvec([(enc_u[p], mt)]), na + 1)
                        bctx.send(p, "q", masked)
                    rows = _open_gradients(bctx, eng, mine, passives, cols)
                    qd = bctx.gather("qd", peers=passives)
                    q = sum(peer_engs[p].unmask(qd[p], states[p]) for p in passives)
                    opened = eng.decode_sum(rows, FRAC_D + LOSS_EXP)
                    total += float(l0.sum() + 0.5 * q[-1] + 0.5 * opened + nb * pen)
                else:
                    enc_u = {p: _shaped(_cipher(c, eng.kit, p, "u"), (nb,), p, bctx.tag("u"))
                             for p, c in bctx.gather("u", peers=passives).items()}
                    rho = bctx.gather("lm", peers=passives)
                    enc_U = None
                    for p in passives:
                        enc_U = enc_u[p] if enc_U is None else enc_U + enc_u[p]
                    if eng.scheme == "ckks":
                        bctx.broadcast("sh", {"s": eng.encrypt(s), "h": eng.encrypt(h)}, peers=passives)
                    else:
                        z = _zeros(bctx.recv(arbiter, "z"), eng.kit, arbiter, nb, FRAC_D)
                        bctx.broadcast("d", (z + s) + eng.scale(enc_U, h), peers=passives)
                    prod = eng.matvec([(enc_U, mt)], fixed={na: LOSS_EXP + FRAC_D - FRAC_ENC})
                    masked, st = eng.mask(prod, na, extra=[2.0 * (l0.sum() + nb * pen)],
                                          offsets=[negated_sum(eng, [rho[p] for p in passives])])
                    bctx.send(arbiter, "g", masked)
                    q = eng.unmask(bctx.recv(arbiter, "gd"), st)
                gw = (xa.T @ s + q[:fa]) / nb
                if fi:
                    full = opt.step(np.append(w, b), np.append(gw, (s.sum() + q[fa]) / nb))
                    w, b = full[:-1], float(full[-1])
                else:
                    w = opt.step(w, gw)
            times.append(time.perf_counter() - t0)
            n_iter = epoch + 1
            if two:
                losses.append(total / n)
                stop = converged(losses, cfg.tol)
                ectx.broadcast("stop", stop, peers=passives)
            else:
                stop = _stop(ectx.recv(arbiter, "stop"), arbiter)
            if not (np.all(np.isfinite(w)) and math.isfinite(b)):
                raise DataError("training diverged (non-finite weights): lower learning_rate or scale the features")
            self._save(prob, n_iter, stop, w, b, opt, losses, times)
            if stop:
                break
        return {"coef": w, "intercept": b, "n_iter": n_iter, "loss_curve": losses, "epoch_seconds": times}


# ----------------------------------------------------------------------------- passive


class PassiveParty:
    """A feature-only party: learns its own weight block and nothing else.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features_k)
        This party's columns, rows aligned with the active party's.
    config : LRConfig
    checkpoint : Checkpointer, optional
        Save this party's state after every epoch and offer it when the active party
        resumes a run (see :mod:`hefl.checkpoint`).
    """

    def __init__(self, X: np.ndarray, config: LRConfig, *, checkpoint: Checkpointer | None = None):
        self.cfg = config.validate()
        self.X = X
        self.checkpoint = checkpoint

    def run(self, ctx) -> dict:
        cfg = self.cfg
        me = ctx.self_name
        self.X = _as_matrix(self.X, me)
        n, fk = self.X.shape
        ctx.send(cfg.active, "shape", {"n_samples": n, "n_features": fk})
        setup = _check_setup(ctx.recv(cfg.active, "setup"), cfg.active, parties=[cfg.active], own=(me, fk))
        if setup["n_samples"] != n:
            raise DataError(f"{me}: {n} rows, the active party has {setup['n_samples']}")
        self.fp = fingerprint("hetero-lr-passive", _config_print(cfg), self.X)
        self.run_id, self._step, state = _join(ctx, cfg, setup, self.checkpoint, self.fp)
        width = setup["width"]
        if cfg.protocol == "two_party":
            mine = _publish_key(ctx, cfg, [cfg.active])
            mine_eng = make_engine(mine, width=width)
            other = make_engine(_peer_key(ctx, cfg, ctx.recv(cfg.active, "pubkey"), cfg.active), width=width)
            mine_eng.precompute(min(cfg.batch_size, n))
        else:
            mine, mine_eng = None, None
            arbiter = str(cfg.arbiter)
            other = make_engine(_peer_key(ctx, cfg, ctx.recv(arbiter, "pubkey"), arbiter), width=width)
        coefs: list[np.ndarray] = []
        first = 0
        if state is not None:
            meta, arrays = state
            first = _position(meta, setup["n_problems"])[0]
            coefs = [np.array(arrays[f"coef_{k}"], dtype=np.float64) for k in range(first)]
        self._finished = coefs
        for c in range(first, setup["n_problems"]):
            coefs.append(self._train(ctx.sub(f"p{c}"), c, setup, mine, mine_eng, other,
                                     state if c == first else None))
        return {"coef": coefs}

    def _save(self, prob: int, epoch: int, stopped: bool, w: np.ndarray, opt) -> None:
        self._step += 1
        if self.checkpoint is None:
            return
        opt_meta, arrays = _opt_state(opt)
        arrays["w"] = w
        for k, coef in enumerate(self._finished):
            arrays[f"coef_{k}"] = coef
        self.checkpoint.save(self._step, {"run_id": self.run_id, "fingerprint": self.fp, "problem": prob,
                                          "epoch": epoch, "stopped": stopped, "opt": opt_meta}, arrays)

    def _train(self, pctx, prob: int, setup: dict, mine, mine_eng, other,
               state: tuple[dict, dict] | None = None) -> np.ndarray:
        cfg = self.cfg
        me = pctx.self_name
        X = self.X
        n, fk = X.shape
        two = cfg.protocol == "two_party"
        others = [p for p in cfg.passives if p != me]
        n_active = int(setup["columns"].get(cfg.active, -1)) + 1
        w = np.zeros(fk)
        opt = make_optimizer(cfg, fk, False)
        first, stopped = 0, False
        if state is not None:  # resumed: the state after epoch ``first`` of this problem
            meta, arrays = state
            _, first, stopped = _position(meta, setup["n_problems"])
            w = np.array(arrays["w"], dtype=np.float64)
            if w.shape != (fk,):
                raise DataError(f"checkpoint weights of shape {w.shape}, expected {(fk,)}")
            _set_opt_state(opt, meta["opt"], arrays)
        for epoch in range(first, 0 if stopped else cfg.max_iter):
            ectx = pctx.sub(f"e{epoch}")
            batches = batch_slices(setup["seed"], epoch, n, cfg.batch_size)
            for bi, idx in enumerate(batches):
                bctx = ectx.sub(f"b{bi}")
                nb = len(idx)
                xk = X[idx]
                u = xk @ w
                pen = penalty_value(cfg.penalty, cfg.alpha, w)
                nxt = _next_batch_size(batches, bi, epoch, cfg, n)
                if two:
                    bctx.send(cfg.active, "u", mine_eng.encrypt(u, FRAC_ENC))
                    mine_eng.precompute(nxt)
                    sh = bctx.recv(cfg.active, "sh")
                    if not isinstance(sh, dict) or "s" not in sh or "h" not in sh:
                        raise ProtocolError("expected {'s', 'h'}", peer=cfg.active, tag=bctx.tag("sh"))
                    pairs = self._pairs(bctx, other, _cipher(sh["s"], other.kit, cfg.active, "sh"),
                                        _cipher(sh["h"], other.kit, cfg.active, "sh"), xk, u, others, nb)
                    offsets: list = []
                    target = cfg.active
                else:
                    if other.scheme == "ckks":
                        enc_u = other.encrypt(u)
                    else:  # the arbiter's fresh encryptions of zero carry the randomness
                        enc_u = _zeros(bctx.recv(str(cfg.arbiter), "z"), other.kit, str(cfg.arbiter), nb,
                                       FRAC_ENC) + u
                    bctx.send(cfg.active, "u", enc_u)
                    rho = other.loss_mask()
                    bctx.send(cfg.active, "lm", rho)
                    if other.scheme == "ckks":
                        sh = bctx.recv(cfg.active, "sh")
                        if not isinstance(sh, dict) or "s" not in sh or "h" not in sh:
                            raise ProtocolError("expected {'s', 'h'}", peer=cfg.active, tag=bctx.tag("sh"))
                        enc_s = _cipher(sh["s"], other.kit, cfg.active, "sh")
                        enc_h = _cipher(sh["h"], other.kit, cfg.active, "sh")
                        pairs = [(enc_s, np.column_stack([xk, u])), (enc_h, np.column_stack([xk * u[:, None], u * u]))]
                    else:
                        enc_d = _cipher(bctx.recv(cfg.active, "d"), other.kit, cfg.active, "d")
                        pairs = [(enc_d, np.column_stack([xk, u]))]
                    offsets = [rho]
                    target = str(cfg.arbiter)
                prod = other.matvec(pairs, fixed={fk: LOSS_EXP})
                masked, st = other.mask(prod, fk, extra=[2.0 * nb * pen], offsets=offsets)
                bctx.send(target, "g", masked)
                if two:
                    q = _shaped(_cipher(bctx.recv(cfg.active, "q"), mine, cfg.active, "q"), (n_active,),
                                cfg.active, bctx.tag("q"))
                    back, _ = open_for_peer(mine_eng, mine, q, n_active)
                    bctx.send(cfg.active, "qd", back)
                g = other.unmask(bctx.recv(target, "gd"), st)
                w = opt.step(w, g / nb)
            src = cfg.active if two else str(cfg.arbiter)
            stop = _stop(ectx.recv(src, "stop"), src)
            self._save(prob, epoch + 1, stop, w, opt)
            if stop:
                break
        return w

    def _pairs(self, bctx, eng, enc_s, enc_h, xk, u, others, nb):
        """The (ciphertext, matrix) pairs of this party's product under A's key."""
        if eng.scheme == "ckks":
            return [(enc_s, np.column_stack([xk, u])), (enc_h, np.column_stack([xk * u[:, None], u * u]))]
        e_k = eng.scale(enc_h, u)  # [[h ⊙ u_k]]_A
        enc_d = enc_s + e_k
        if others:
            # re-randomised: the other passives know [[h]] and could otherwise solve for u_k
            bctx.broadcast("e", e_k + eng.encrypt_zero(nb, e_k.frac_bits), peers=others)
            for p, e_l in bctx.gather("e", peers=others).items():
                enc_d = enc_d + _cipher(e_l, eng.kit, p, "e")
        return [(enc_d, np.column_stack([xk, u]))]


# ----------------------------------------------------------------------------- arbiter


class Arbiter:
    """The key holder of the ``"arbiter"`` protocol (the TEE aggregator's role).

    Opens masked gradients for the data parties, sums the masked loss pieces into the
    batch loss, and decides early stopping.  Holds no data.

    Parameters
    ----------
    config : LRConfig
    checkpoint : Checkpointer, optional
        Save the loss curves and stop decisions after every epoch and offer them when the
        active party resumes a run (the key pair is made afresh: nothing encrypted is kept).
    """

    def __init__(self, config: LRConfig, *, checkpoint: Checkpointer | None = None):
        self.cfg = config.validate()
        self.checkpoint = checkpoint

    def run(self, ctx) -> dict:
        cfg = self.cfg
        setup = _check_setup(ctx.recv(cfg.active, "setup"), cfg.active)
        data_parties = [cfg.active, *cfg.passives]
        cols = setup["columns"]
        for p in data_parties:
            if not isinstance(cols.get(p), int) or cols[p] < 0:
                raise ProtocolError(f"setup lacks the column count of {p!r}", peer=cfg.active, tag="setup")
        self.fp = fingerprint("hetero-lr-arbiter", _config_print(cfg),
                              {k: v for k, v in setup.items() if k != "resume"})
        self.run_id, step, state = _join(ctx, cfg, setup, self.checkpoint, self.fp)
        kit = _publish_key(ctx, cfg, data_parties)
        eng = make_engine(kit, width=setup["width"])
        n = setup["n_samples"]
        additive = eng.scheme != "ckks"
        if additive:
            eng.precompute((1 + len(cfg.passives)) * min(cfg.batch_size, n))
        curves: list[list[float]] = []
        first, done, stopped = 0, 0, False
        resumed: list[float] = []
        if state is not None:  # resumed: the state after epoch ``done`` of problem ``first``
            meta, _ = state
            first, done, stopped = _position(meta, setup["n_problems"])
            curves = [[float(v) for v in cv] for cv in meta["curves"]]
            resumed = [float(v) for v in meta["losses"]]
            if len(curves) != first or len(resumed) != done:
                raise DataError(f"checkpoint {step} does not fit problem {first}, epoch {done}")
        for c in range(first, setup["n_problems"]):
            pctx = ctx.sub(f"p{c}")
            losses: list[float] = resumed if c == first else []
            start = done if c == first else 0
            for epoch in range(start, 0 if (c == first and stopped) else cfg.max_iter):
                ectx = pctx.sub(f"e{epoch}")
                total = 0.0
                batches = batch_slices(setup["seed"], epoch, n, cfg.batch_size)
                for bi, idx in enumerate(batches):
                    bctx = ectx.sub(f"b{bi}")
                    if additive:
                        # fresh encryptions of zero: the data parties' randomness, made with
                        # this party's CRT key (about half the cost) while it is otherwise idle
                        nb = len(idx)
                        bctx.send(cfg.active, "z", eng.encrypt_zero(nb, FRAC_D))
                        for p in cfg.passives:
                            bctx.send(p, "z", eng.encrypt_zero(nb, FRAC_ENC))
                        eng.precompute((1 + len(cfg.passives)) * _next_batch_size(batches, bi, epoch, cfg, n))
                    rows = _open_gradients(bctx, eng, kit, data_parties, cols)
                    total += eng.decode_sum(rows, FRAC_D + LOSS_EXP) / 2.0
                losses.append(total / n)
                stop = converged(losses, cfg.tol)
                ectx.broadcast("stop", stop, peers=data_parties)
                step += 1
                if self.checkpoint is not None:
                    self.checkpoint.save(step, {"run_id": self.run_id, "fingerprint": self.fp, "problem": c,
                                                "epoch": epoch + 1, "stopped": stop, "losses": losses,
                                                "curves": curves})
                if stop:
                    break
            curves.append(losses)
        return {"loss_curve": curves, "n_iter": [len(cv) for cv in curves]}
