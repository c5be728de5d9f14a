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
from typing import Any

import numpy as np

from hefl.errors import DataError, ProtocolError

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


def _check_setup(setup: Any, peer: str) -> dict:
    ok = isinstance(setup, dict) and all(
        isinstance(setup.get(k), int) and not isinstance(setup.get(k), bool)
        for k in ("seed", "n_problems", "width", "n_samples")
    ) and isinstance(setup.get("columns"), dict)
    if not ok or setup["n_problems"] < 1 or setup["width"] < 1 or setup["n_samples"] < 1:
        raise ProtocolError(f"malformed setup message {setup!r}", peer=peer, tag="setup")
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


def _zeros(obj: Any, kit: Any, peer: str, n: int, frac_bits: int) -> Any:
    """Fresh encryptions of zero supplied by the arbiter: right key, length and scale."""
    z = _cipher(obj, kit, peer, "z")
    if z.shape != (n,) or z.frac_bits != frac_bits:
        raise ProtocolError(f"expected {n} encryptions of zero at scale 2^-{frac_bits}", peer=peer, tag="z")
    return z


def _stop(flag: Any, peer: str) -> bool:
    if not isinstance(flag, bool):
        raise ProtocolError(f"stop flag must be a bool, got {flag!r}", peer=peer, tag="stop")
    return flag


# ----------------------------------------------------------------------------- active


class ActiveParty:
    """The label holder: computes the residual terms, owns the intercept.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features_A)
        This party's columns (may have zero columns).
    y : ndarray of shape (n_samples,) or (n_samples, n_problems)
        Targets; several columns train one-vs-rest problems one after the other.
    config : LRConfig
        The job's shared configuration.
    seed : int, optional
        Batch-order seed shared with the other parties (fresh when ``None``).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, config: LRConfig, *, seed: int | None = None):
        self.cfg = config.validate()
        self.X = _as_matrix(X, config.active)
        y = np.asarray(y, dtype=np.float64)
        self.Y = y.reshape(y.shape[0], -1)
        if self.Y.shape[0] != self.X.shape[0]:
            raise DataError(f"{self.Y.shape[0]} labels for {self.X.shape[0]} rows")
        if not np.all(np.isfinite(self.Y)):
            raise DataError("labels contain NaN or infinity")
        self.seed = seed

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
                    and isinstance(sh.get("n_features"), int) and sh["n_features"] >= 0):
                raise ProtocolError(f"malformed shape message {sh!r}", peer=p, tag="shape")
            if sh["n_samples"] != n:
                raise DataError(f"party {p!r} has {sh['n_samples']} rows, {cfg.active!r} has {n}: "
                                "align the rows (PSI) first")
            cols[p] = int(sh["n_features"])
        width = next_pow2(max([fa + fi + 1] + [cols[p] + 1 for p in passives]))
        seed = int(self.seed) if self.seed is not None else secrets.randbits(62)
        setup = {"seed": seed, "n_problems": int(self.Y.shape[1]), "width": width, "n_samples": n,
                 "columns": cols}
        ctx.broadcast("setup", setup)
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
        for c in range(self.Y.shape[1]):
            res = self._train(ctx.sub(f"p{c}"), self.Y[:, c], seed, cols, keys_)
            for k, v in res.items():
                out[k].append(v)
        return out

    def _train(self, pctx, y: np.ndarray, seed: int, cols: dict, keys_: tuple[Any, Any, Any]) -> dict:
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
        for epoch in range(cfg.max_iter):
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
                    enc_u = {p: _cipher(c, peer_engs[p].kit, p, "u")
                             for p, c in bctx.gather("u", peers=passives).items()}
                    states = {}
                    for p in passives:
                        pe = peer_engs[p]
                        masked, states[p] = pe.mask(pe.matvec([(enc_u[p], mt)]), na + 1)
                        bctx.send(p, "q", masked)
                    g = bctx.gather("g", peers=passives)
                    rows: list = []
                    for p in passives:
                        back, rest = open_for_peer(eng, mine, _cipher(g[p], mine, p, "g"), cols[p])
                        bctx.send(p, "gd", back)
                        rows += rest
                    qd = bctx.gather("qd", peers=passives)
                    q = sum(peer_engs[p].unmask(qd[p], states[p]) for p in passives)
                    opened = eng.decode_sum(rows, FRAC_D + LOSS_EXP)
                    total += float(l0.sum() + 0.5 * q[-1] + 0.5 * opened + nb * pen)
                else:
                    enc_u = {p: _cipher(c, eng.kit, p, "u") for p, c in bctx.gather("u", peers=passives).items()}
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
    """

    def __init__(self, X: np.ndarray, config: LRConfig):
        self.cfg = config.validate()
        self.X = X

    def run(self, ctx) -> dict:
        cfg = self.cfg
        me = ctx.self_name
        self.X = _as_matrix(self.X, me)
        n, fk = self.X.shape
        ctx.send(cfg.active, "shape", {"n_samples": n, "n_features": fk})
        setup = _check_setup(ctx.recv(cfg.active, "setup"), cfg.active)
        if setup["n_samples"] != n:
            raise DataError(f"{me}: {n} rows, the active party has {setup['n_samples']}")
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
        coefs = []
        for c in range(setup["n_problems"]):
            coefs.append(self._train(ctx.sub(f"p{c}"), setup, mine, mine_eng, other))
        return {"coef": coefs}

    def _train(self, pctx, setup: dict, mine, mine_eng, other) -> np.ndarray:
        cfg = self.cfg
        me = pctx.self_name
        X = self.X
        n, fk = X.shape
        two = cfg.protocol == "two_party"
        others = [p for p in cfg.passives if p != me]
        n_active = int(setup["columns"].get(cfg.active, -1)) + 1
        w = np.zeros(fk)
        opt = make_optimizer(cfg, fk, False)
        for epoch in range(cfg.max_iter):
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
                    q = _cipher(bctx.recv(cfg.active, "q"), mine, cfg.active, "q")
                    back, _ = open_for_peer(mine_eng, mine, q, n_active)
                    bctx.send(cfg.active, "qd", back)
                g = other.unmask(bctx.recv(target, "gd"), st)
                w = opt.step(w, g / nb)
            src = cfg.active if two else str(cfg.arbiter)
            if _stop(ectx.recv(src, "stop"), src):
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
    """

    def __init__(self, config: LRConfig):
        self.cfg = config.validate()

    def run(self, ctx) -> dict:
        cfg = self.cfg
        setup = _check_setup(ctx.recv(cfg.active, "setup"), cfg.active)
        data_parties = [cfg.active, *cfg.passives]
        cols = setup["columns"]
        for p in data_parties:
            if not isinstance(cols.get(p), int) or cols[p] < 0:
                raise ProtocolError(f"setup lacks the column count of {p!r}", peer=cfg.active, tag="setup")
        kit = _publish_key(ctx, cfg, data_parties)
        eng = make_engine(kit, width=setup["width"])
        n = setup["n_samples"]
        additive = eng.scheme != "ckks"
        if additive:
            eng.precompute((1 + len(cfg.passives)) * min(cfg.batch_size, n))
        curves, iters = [], []
        for c in range(setup["n_problems"]):
            pctx = ctx.sub(f"p{c}")
            losses: list[float] = []
            for epoch in range(cfg.max_iter):
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
                    g = bctx.gather("g", peers=data_parties)
                    rows: list = []
                    for p in data_parties:
                        back, rest = open_for_peer(eng, kit, _cipher(g[p], kit, p, "g"), cols[p])
                        bctx.send(p, "gd", back)
                        rows += rest
                    total += eng.decode_sum(rows, FRAC_D + LOSS_EXP) / 2.0
                losses.append(total / n)
                stop = converged(losses, cfg.tol)
                ectx.broadcast("stop", stop, peers=data_parties)
                if stop:
                    break
            curves.append(losses)
            iters.append(len(losses))
        return {"loss_curve": curves, "n_iter": iters}
