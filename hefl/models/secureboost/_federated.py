"""SecureBoost roles: the federated protocol around the plaintext core.

The active party holds the label and the secret key; passive parties hold features and
only ever see ciphertexts.  Per tree:

1. **active** computes g/h, quantises them (:class:`~._gh.GHCodec`), packs a sample's
   g and h (all outputs when they fit) into one plaintext, encrypts (obfuscators are
   precomputed by low-priority background threads while it waits), sends the cipher
   arrays once, together with the rows of the tree and a fresh *column mask*;
2. the :class:`~._tree.TreeGrower` on the active party asks for histograms of the
   smaller child of each split only (histogram subtraction happens on the decrypted
   histograms); each **passive** party builds encrypted per-bin sums for all nodes of
   the request with one ``bucket_sum``, drops empty bins, compresses the rest
   (``shift_and_pack``, ~19 bins per ciphertext for binary tasks) and sends them back;
3. **active** decrypts, unpacks, adds its own plaintext histograms and finds the best
   split of every node; a passive party's feature order is a fresh random permutation
   per tree, so the active party knows a passive split only as ``(party, split_id)``;
4. the owner of a split partitions the node's rows and keeps ``(feature, threshold,
   default direction)`` in its private lookup table under that ``split_id``.

Prediction: each passive party evaluates all of its splits for the rows to predict and
sends the decisions (bits); the active party routes the rows through the trees.

What each side learns (semi-honest, as in the SecureBoost paper): passive parties learn
the sample-to-node assignment of the tree rows, the number of bits per packed gradient
(the order of magnitude of the gradients) and which rows are in a tree; the active
party learns per-bin gradient sums and counts of the passive features (not which
feature: positions are permuted per tree, but within one tree two splits on the same
position are the same feature) and the passive parties' split decisions for the rows it
predicts.  No party sees another's raw features, thresholds, labels or gradients.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl.checkpoint import Checkpointer, fingerprint, new_run_id, parse_offer
from hefl.errors import ConfigError, DataError, ProtocolError
from hefl.he import CipherArray, load_public_kit, public_kit_to_wire
from hefl.models._parties import MAX_FEATURES

from ._binning import QuantileBinner
from ._gh import DEFAULT_GH_FRAC_BITS, GHCodec
from ._histogram import build_histograms, paired_bucket_sum
from ._objective import get_objective
from ._split import FeatureBlocks, SplitInfo, SplitParams
from ._tree import GrowParams, Tree, TreeGrower

__all__ = ["BoostParams", "ActiveParty", "PassiveParty", "predict_active", "predict_passive"]

log = logging.getLogger(__name__)


@dataclass
class BoostParams:
    """Training parameters shared by the roles (plain values only: JSON-able)."""

    objective: str = "binary:logistic"
    n_classes: int | None = None
    n_estimators: int = 100
    learning_rate: float = 0.3
    max_depth: int = 6
    max_leaves: int = 0
    grow_policy: str = "depthwise"
    max_bin: int = 32
    reg_lambda: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    early_stopping_rounds: int | None = None
    validation_fraction: float = 0.1
    base_score: float | None = None
    random_state: int | None = None
    gh_frac_bits: int = DEFAULT_GH_FRAC_BITS
    precompute: bool = True

    def grow_params(self) -> GrowParams:
        return GrowParams(
            max_depth=int(self.max_depth), max_leaves=int(self.max_leaves), grow_policy=self.grow_policy,
            learning_rate=float(self.learning_rate),
            split=SplitParams(reg_lambda=float(self.reg_lambda), gamma=float(self.gamma),
                              min_child_weight=float(self.min_child_weight)),
        )


@dataclass
class PhaseTimer:
    """Seconds spent per phase on one party: active keygen (with the HE backend's start-up),
    binning, encrypt, histograms, decrypt, split_finding, network; passive setup (loading
    the kit and starting its backend), histograms, compress, network."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, dt: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + dt


class _Link:
    """The active party's command stream to one passive party (numbered, so tags never repeat)."""

    def __init__(self, ctx, peer: str, timer: PhaseTimer):
        self.ctx = ctx
        self.peer = peer
        self.seq = 0
        self.timer = timer

    def command(self, op: str, payloads: dict[str, Any] | None = None, **fields: Any):
        """Send command ``op`` with JSON fields and extra payloads; returns its reply context."""
        tag = f"cmd-{self.seq}"
        self.seq += 1
        t = time.perf_counter()
        self.ctx.send(self.peer, tag, {"op": op, **fields})
        sub = self.ctx.sub(tag)
        for name, obj in (payloads or {}).items():
            sub.send(self.peer, name, obj)
        self.timer.add("network", time.perf_counter() - t)
        return sub

    def recv(self, sub, name: str):
        t = time.perf_counter()
        out = sub.recv(self.peer, name)
        self.timer.add("network", time.perf_counter() - t)
        return out


def _route_own(bins: np.ndarray, missing: int, feature: int, split_bin: int, default_left: bool,
               rows: np.ndarray) -> np.ndarray:
    code = bins[rows, feature].astype(np.int64)
    return np.where(code == missing, default_left, code <= split_bin)


# ====================================================================== active side
class _FederatedProvider:
    """HistogramProvider for the grower: own plaintext histograms + passive encrypted ones."""

    def __init__(self, party: ActiveParty, gh_q: np.ndarray, codec: GHCodec):
        self.party = party
        self.gh = gh_q
        self.codec = codec
        self.requests = 0
        self.split_ids: dict[int, int] = {}  # node -> passive split id
        self.seconds = 0.0  # time spent inside provider calls (the rest of growth is split finding)

    def build_histograms(self, nodes, row_sets):
        t0 = time.perf_counter()
        try:
            return self._build_histograms(nodes, row_sets)
        finally:
            self.seconds += time.perf_counter() - t0

    def _build_histograms(self, nodes, row_sets):
        p = self.party
        k = self.requests
        self.requests += 1
        sizes = np.array([r.size for r in row_sets], dtype=np.int64)
        rows = np.concatenate(row_sets).astype(np.int64) if len(row_sets) else np.zeros(0, np.int64)
        subs = {}
        for link in p.links:
            subs[link.peer] = link.command("hist", {"rows": rows, "sizes": sizes}, request=k)
        t = time.perf_counter()
        own = build_histograms(p.bins, self.gh, p.n_bin_slots, list(row_sets))
        p.timer.add("histograms", time.perf_counter() - t)
        parts = [own]
        for link, (f_p, b_p) in zip(p.links, p.passive_shapes):
            sub = subs[link.peer]
            nonempty = np.asarray(link.recv(sub, "nonempty"), dtype=bool)
            if nonempty.shape != (len(nodes), f_p, b_p):
                raise ProtocolError(f"histogram mask of shape {nonempty.shape}, expected {(len(nodes), f_p, b_p)}",
                                    peer=link.peer, tag=f"hist-{k}")
            comps = [link.recv(sub, f"hist-{c}") for c in range(len(self.codec.chunks))]
            count = int(nonempty.sum())
            for ca, need in zip(comps, self.codec.compressed_count(count)):  # before any decryption
                if not isinstance(ca, CipherArray) or ca.shape != (need,):
                    got = ca.shape if isinstance(ca, CipherArray) else type(ca).__name__
                    raise ProtocolError(f"{got} compressed ciphertexts for {count} bins, expected ({need},)",
                                        peer=link.peer, tag=f"hist-{k}")
            t = time.perf_counter()
            limbs = [p.kit.decrypt_raw(ca) for ca in comps]
            p.timer.add("decrypt", time.perf_counter() - t)
            sums = self.codec.unpack(limbs, count)
            hist = np.zeros((len(nodes), f_p, b_p, 2 * self.codec.k))
            hist[nonempty] = sums
            parts.append(hist)
        from ._split import concat_histograms

        hist, _ = concat_histograms(parts)
        return hist

    def split_rows(self, nodes, row_sets, splits: list[SplitInfo]):
        """One exchange per owner and level: the owner partitions its nodes' rows."""
        t0 = time.perf_counter()
        try:
            return self._split_rows(nodes, row_sets, splits)
        finally:
            self.seconds += time.perf_counter() - t0

    def _split_rows(self, nodes, row_sets, splits: list[SplitInfo]):
        p = self.party
        out: list = [None] * len(nodes)
        pending = []
        for b, link in enumerate(p.links, start=1):
            idx = [i for i, s in enumerate(splits) if s.block == b]
            if not idx:
                continue
            rows = [np.asarray(row_sets[i], dtype=np.int64) for i in idx]
            spec = np.array([[splits[i].feature, splits[i].bin, int(splits[i].default_left)] for i in idx],
                            dtype=np.int64)
            sub = link.command("split", {"rows": np.concatenate(rows), "sizes": np.array([r.size for r in rows]),
                                         "splits": spec})
            pending.append((link, sub, idx, rows))
        for i, s in enumerate(splits):
            if s.block == 0:
                out[i] = _route_own(p.bins, p.n_bin_slots - 1, s.feature, s.bin, s.default_left,
                                    np.asarray(row_sets[i]))
        for link, sub, idx, rows in pending:
            mask = np.asarray(link.recv(sub, "mask"), dtype=bool)
            sids = np.asarray(link.recv(sub, "split_ids"))
            total = sum(r.size for r in rows)
            if mask.shape != (total,) or sids.shape != (len(idx),) or sids.dtype.kind not in "iu":
                raise ProtocolError("malformed split reply", peer=link.peer, tag="split")
            off = 0
            for i, r, sid in zip(idx, rows, sids.tolist()):
                out[i] = mask[off: off + r.size]
                off += r.size
                self.split_ids[int(nodes[i])] = int(sid)
        return out


class ActiveParty:
    """The label holder: key owner, gradient encryption, split finding, leaf values.

    Parameters
    ----------
    ctx : PartyContext
    X : ndarray of shape (n_rows, n_own_features)
        Own features of the aligned rows (NaN = missing).
    y : ndarray of shape (n_rows,)
        Labels (class indices for classification).
    params : BoostParams
    kit : SecretKit
        The HE kit (``paillier``, ``ou`` or ``mock``); its public part goes to the peers.
    passive : list of str
        Passive party names, in block order.
    checkpoint : Checkpointer, optional
        Save this party's state after every tree (and tell the passive parties to save
        theirs); see :mod:`hefl.checkpoint`.
    resume : bool
        Continue from the newest tree every party has a checkpoint of (trains from the
        start, saying so in the log, when there is none). Needs ``checkpoint``.
    """

    def __init__(self, ctx, X: np.ndarray, y: np.ndarray, params: BoostParams, kit, passive: list[str],
                 *, n_jobs: int | None = None, checkpoint: Checkpointer | None = None, resume: bool = False):
        self.ctx = ctx
        self.checkpoint = checkpoint
        self.resume = bool(resume)
        self.X = np.asarray(X, dtype=np.float64)
        self.y_raw = np.asarray(y, dtype=np.float64)
        self.params = params
        self.kit = kit
        self.passive = list(passive)
        self.timer = PhaseTimer()
        self.links = [_Link(ctx, name, self.timer) for name in self.passive]

    def fit(self) -> dict:
        p = self.params
        n = self.X.shape[0]
        if self.y_raw.shape != (n,):
            raise DataError(f"y has shape {self.y_raw.shape} for {n} rows")
        obj = get_objective(p.objective, p.n_classes)
        y = obj.check_labels(self.y_raw)
        k = obj.n_outputs
        rng = np.random.default_rng(p.random_state)

        # validation rows for early stopping (held out of every tree)
        valid = np.zeros(0, dtype=np.int64)
        if p.early_stopping_rounds:
            n_valid = max(1, int(round(p.validation_fraction * n)))
            if n - n_valid < 2:
                raise DataError("too few rows for a validation split")
            valid = np.sort(rng.choice(n, size=n_valid, replace=False))
        train = np.setdiff1d(np.arange(n), valid)

        t = time.perf_counter()
        self.binner = QuantileBinner(max_bin=int(p.max_bin)).fit(self.X)
        self.bins = self.binner.transform(self.X)
        self.n_bin_slots = self.binner.n_bin_slots
        self.timer.add("binning", time.perf_counter() - t)

        t = time.perf_counter()
        pub = self.kit.public_kit()
        self.ctx.register_kit(pub)  # compressed histograms come back under our own key
        resume = self.resume and self.checkpoint is not None
        extra = {"resume": True} if resume else {}
        for link in self.links:
            link.command("setup", {"kit": public_kit_to_wire(pub)}, n_rows=n, max_bin=int(p.max_bin), n_outputs=k,
                         **extra)
        shapes, offers = [], []
        for i, link in enumerate(self.links):
            ack = self.ctx.recv(link.peer, "setup-ack")
            if not isinstance(ack, dict) or not isinstance(ack.get("n_features"), int) \
                    or not isinstance(ack.get("n_bin_slots"), int) \
                    or not 2 <= ack["n_bin_slots"] <= int(p.max_bin) + 1 \
                    or not 0 <= ack["n_features"] <= MAX_FEATURES:
                raise ProtocolError(f"malformed setup reply {str(ack)[:200]}", peer=link.peer, tag="setup-ack")
            shapes.append((ack["n_features"], ack["n_bin_slots"]))
            offers.append(parse_offer(ack.get("checkpoints"), link.peer, "setup-ack"))
        self.passive_shapes = shapes
        self.timer.add("network", time.perf_counter() - t)
        fp = fingerprint("secureboost-active", {**dataclasses.asdict(p), "n_estimators": None}, self.X, self.y_raw,
                         self.passive)
        state = self._start(fp, offers) if self.checkpoint is not None else None
        blocks = FeatureBlocks((self.X.shape[1],) + tuple(s[0] for s in shapes))
        d_total = blocks.n_features

        base = (obj.init_margin(y[train]) if p.base_score is None
                else obj.margin_from_base_score(float(p.base_score)))
        margin = np.tile(base, (n, 1))
        trees: list[dict] = []
        train_loss: list[float] = []
        valid_loss: list[float] = []
        best, best_round = np.inf, -1
        first, stopped = 0, False
        if state is not None:  # resumed: the state after tree ``first``
            meta, arrays = state
            first, trees, stopped = int(meta["step"]), list(meta["trees"]), bool(meta["stopped"])
            train_loss, valid_loss = list(meta["train_loss"]), list(meta["valid_loss"])
            best, best_round = float(meta["best"]), int(meta["best_round"])
            rng.bit_generator.state = meta["rng"]
            margin = np.array(arrays["margin"], dtype=np.float64)
            if margin.shape != (n, k):
                raise DataError(f"checkpoint margin has shape {margin.shape}, expected {(n, k)}")
        grow_params = p.grow_params()
        rows_per_tree = len(train) if p.subsample >= 1.0 else int(len(train) * p.subsample) + 64
        n_left = 0 if stopped else max(0, int(p.n_estimators) - first)
        if p.precompute and hasattr(self.kit, "precompute") and n_left:
            self.kit.precompute(rows_per_tree * n_left, background=True, low_priority=True)

        for rnd in range(first, first + n_left):
            gh_all = obj.gh(y, margin)
            rows = train
            if p.subsample < 1.0:
                rows = train[rng.random(len(train)) < float(p.subsample)]
                if rows.size == 0:
                    rows = train[:1]
            mask = None
            if p.colsample_bytree < 1.0:
                n_keep = max(1, int(np.floor(float(p.colsample_bytree) * d_total)))
                mask = np.zeros(d_total, dtype=bool)
                mask[rng.choice(d_total, size=n_keep, replace=False)] = True

            codec = GHCodec(gh_all[rows], self.kit.plaintext_bits, p.gh_frac_bits)
            codec.limit_slots(self._compress_slots(rows.size))
            gh_q = np.zeros_like(gh_all)
            gh_q[rows] = codec.quantize(gh_all[rows])
            t = time.perf_counter()
            n_limbs = getattr(self.kit, "Ln", None) or ((self.kit.n.bit_length() + 63) // 64)
            enc = [self.kit.encrypt_encoded(pl) for pl in codec.pack(gh_q[rows], n_limbs)]
            self.timer.add("encrypt", time.perf_counter() - t)
            offs = blocks.offsets
            for i, link in enumerate(self.links):
                cols = (np.ones(shapes[i][0], dtype=bool) if mask is None
                        else mask[offs[i + 1]: offs[i + 1] + shapes[i][0]])
                payloads = {"rows": rows.astype(np.int64), "columns": cols}
                for c, ca in enumerate(enc):
                    payloads[f"gh-{c}"] = ca
                link.command("tree", payloads, round=rnd, layout=codec.layout())

            provider = _FederatedProvider(self, gh_q, codec)
            t = time.perf_counter()
            # a passive party leaves its masked-out features' histograms empty, and shows its
            # features at secret shuffled positions: the mask applies to the own block only
            own_mask = None
            if mask is not None:
                own_mask = mask.copy()
                own_mask[offs[1]:] = True
            res = TreeGrower(grow_params, provider, blocks=blocks, feature_mask=own_mask).grow(gh_q, rows)
            self.timer.add("split_finding", time.perf_counter() - t - provider.seconds)
            tree = res.tree
            # the active copy knows passive splits only as (party, split_id)
            for nid, sid in provider.split_ids.items():
                tree.feature[nid] = sid
                tree.split_bin[nid] = -1
            tree.fill_thresholds(lambda b, f, kb: self.binner.threshold(f, kb), owners=[0])
            pos = res.positions
            route = np.union1d(np.flatnonzero(pos < 0), valid) if (valid.size or (pos < 0).any()) else None
            if route is not None and route.size:
                pos[route] = self._route_rows(tree, route, "train")
            margin += tree.value[pos]
            trees.append(tree.to_dict())
            train_loss.append(float(obj.loss(y[train], margin[train])))
            if valid.size:
                valid_loss.append(float(obj.loss(y[valid], margin[valid])))
                if valid_loss[-1] < best:
                    best, best_round = valid_loss[-1], rnd
                elif rnd - best_round >= int(p.early_stopping_rounds):
                    stopped = True
            if self.checkpoint is not None:
                self._save(rnd + 1, margin, {"trees": trees, "train_loss": train_loss, "valid_loss": valid_loss,
                                             "best": best, "best_round": best_round, "stopped": stopped,
                                             "rng": rng.bit_generator.state})
            if stopped:
                break
        for link in self.links:
            link.command("finish")
        if hasattr(self.kit, "cancel_precompute"):
            self.kit.cancel_precompute()  # early stopping may leave part of the pool unused
        n_keep = best_round + 1 if valid.size else len(trees)
        return {
            "kind": "SecureBoostActive",
            "objective": obj.to_dict(),
            "base_margin": np.asarray(base, dtype=float).tolist(),
            "parties": [self.ctx.self_name] + self.passive,
            "blocks": list(blocks.sizes),
            "binner": self.binner.to_dict(),
            "trees": trees[:n_keep],
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "metric": obj.metric_name,
            "best_iteration": n_keep - 1,
            "timings": dict(self.timer.seconds),
        }

    # -- checkpoints -----------------------------------------------------------------
    def _start(self, fp: str, offers: list[set]) -> tuple[dict, dict] | None:
        """Agree on where training starts; returns the state to resume from, if any."""
        assert self.checkpoint is not None
        ck = self.checkpoint
        state = None
        if self.resume:
            # a lowered n_estimators: only checkpoints at or before its last tree
            limit = int(self.params.n_estimators)
            state = ck.resume_state(fp, offers, "tree", keep=lambda m: int(m.get("step", 0)) <= limit)
            if state is not None:
                log.info("resume: continuing run %s after tree %d (the newest every party has)",
                         state[0]["run_id"], state[0]["step"])
        if state is None:
            ck.clear()
            self.run_id, step = new_run_id(), 0
        else:
            self.run_id, step = state[0]["run_id"], int(state[0]["step"])
        self.fp = fp
        for link in self.links:
            link.command("start", run_id=self.run_id, round=step)
        return state

    def _save(self, step: int, margin: np.ndarray, meta: dict) -> None:
        assert self.checkpoint is not None
        self.checkpoint.save(step, {"run_id": self.run_id, "fingerprint": self.fp, **meta}, {"margin": margin})
        for link in self.links:
            link.command("checkpoint", round=step)

    def _route_rows(self, tree: Tree, rows: np.ndarray, dataset: str) -> np.ndarray:
        """Leaves of ``rows`` (not in the tree's row set) via own splits and passive decisions."""
        dec = np.zeros((rows.size, tree.n_nodes), dtype=bool)
        internal = np.flatnonzero(~tree.is_leaf)
        own = internal[tree.block[internal] == 0]
        for nid in own:
            dec[:, nid] = _route_own(self.bins, self.n_bin_slots - 1, int(tree.feature[nid]),
                                     int(tree.split_bin[nid]), bool(tree.default_left[nid]), rows)
        for b, link in enumerate(self.links, start=1):
            nodes = internal[tree.block[internal] == b]
            if not nodes.size:
                continue
            sub = link.command("decide", {"rows": rows.astype(np.int64),
                                          "split_ids": tree.feature[nodes].astype(np.int64)}, dataset=dataset)
            got = _unpack_decisions(link.recv(sub, "decisions"), rows.size, nodes.size)
            dec[:, nodes] = got
        return tree.apply_decisions(dec)

    def _compress_slots(self, n_rows: int):
        """``(width_bits, most) -> values per compressed ciphertext`` for a tree of
        ``n_rows`` rows: the kit's choice for the largest histogram request one passive
        party will answer (``HEFL_SB_COMPRESS_SLOTS``, a number or ``max``, overrides it)."""
        forced = os.environ.get("HEFL_SB_COMPRESS_SLOTS", "").strip().lower()
        if forced:
            if forced == "max":
                return lambda bits, most: most
            try:
                k = int(forced)
            except ValueError:
                raise ConfigError(f"HEFL_SB_COMPRESS_SLOTS must be a positive number or 'max', "
                                  f"got {forced!r}") from None
            if k < 1:
                raise ConfigError(f"HEFL_SB_COMPRESS_SLOTS must be at least 1, got {k}")
            return lambda bits, most: k
        p = self.params
        depth, leaves = int(p.max_depth), int(p.max_leaves)
        # histograms are built for the smaller child of each split: at most half the
        # deepest split level's nodes (leaf-wise growth: one node) and half the rows
        nodes = 2 ** max(0, depth - 2) if p.grow_policy == "depthwise" and depth > 0 else 1
        if leaves > 0:
            nodes = min(nodes, max(1, leaves // 2))
        cells = max((min(nodes * f * b, max(1, n_rows // 2) * f) for f, b in self.passive_shapes), default=1)
        return lambda bits, most: self.kit.compress_slots(cells, bits)


def _unpack_decisions(packed, n_rows: int, n_cols: int) -> np.ndarray:
    arr = np.asarray(packed)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ProtocolError("decisions must be a packed uint8 array")
    if arr.size != -(-n_rows * n_cols // 8):  # unpackbits would pad or cut it silently
        raise ProtocolError(f"{arr.size} bytes of decisions for {n_rows} rows × {n_cols} splits")
    bits = np.unpackbits(arr, count=n_rows * n_cols) if n_rows * n_cols else np.zeros(0, np.uint8)
    if bits.size != n_rows * n_cols:
        raise ProtocolError(f"{bits.size} decisions for {n_rows} rows × {n_cols} splits")
    return bits.reshape(n_rows, n_cols).astype(bool)


# ===================================================================== passive side
class PassiveParty:
    """A feature holder: bins its columns, builds encrypted histograms, keeps its splits private.

    Parameters
    ----------
    ctx : PartyContext
    X : ndarray of shape (n_rows, n_features)
        Own features of the aligned rows (NaN = missing).
    active : str
        Name of the active party.
    checkpoint : Checkpointer, optional
        Where this party saves its private split table when the active party says a tree
        is finished, and offers it back when the active party resumes a run.
    permutation_seed : int, optional
        Seed of this party's per-tree feature permutations (default: fresh from the OS
        CSPRNG). It hides which feature a split is on from the active party, so it must
        be this party's secret: never derive it from anything a peer knows. The state of
        the permutations is part of the checkpoint, so a resumed run continues exactly
        as the interrupted one would have; two *fresh* runs can differ where two passive
        features give exactly the same gain (the permutation breaks the tie).
    """

    def __init__(self, ctx, X: np.ndarray, active: str, *, n_jobs: int | None = None,
                 allow_insecure: bool = False, backend: str = "auto", checkpoint: Checkpointer | None = None,
                 permutation_seed: int | None = None):
        self.ctx = ctx
        self.checkpoint = checkpoint
        self.run_id: str | None = None
        self.n_jobs = n_jobs
        self.allow_insecure = allow_insecure
        self.backend = backend
        self.X = np.asarray(X, dtype=np.float64)
        self.active = active
        self.splits: list[dict] = []
        self.timer = PhaseTimer()
        self.n_outputs: int | None = None  # set by the setup command, which comes first
        # permutations: never seeded by peers
        self._rng = np.random.default_rng(secrets.randbits(128) if permutation_seed is None else permutation_seed)

    def serve(self) -> dict:
        """Answer the active party's commands until it says ``finish``; returns this party's model."""
        if self.backend == "gpu":
            from hefl import gpu

            gpu.prefetch()  # CUDA starts while the active party makes its key
        seq = 0
        while True:
            tag = f"cmd-{seq}"
            cmd = self.ctx.recv(self.active, tag)
            sub = self.ctx.sub(tag)
            seq += 1
            if not isinstance(cmd, dict) or not isinstance(cmd.get("op"), str):
                raise ProtocolError("malformed command", peer=self.active, tag=tag)
            op = cmd["op"]
            if self.n_outputs is None and op not in ("setup", "finish"):
                raise ProtocolError(f"command {op!r} before setup", peer=self.active, tag=tag)
            if op == "setup":
                self._setup(cmd, sub)
            elif op == "tree":
                self._tree(cmd, sub)
            elif op == "hist":
                self._hist(cmd, sub)
            elif op == "split":
                self._split(cmd, sub)
            elif op == "decide":
                self._decide(cmd, sub, self.X)
            elif op == "start":
                self._start(cmd, tag)
            elif op == "checkpoint":
                self._checkpoint(cmd, tag)
            elif op == "finish":
                break
            else:
                raise ProtocolError(f"unknown command {op!r}", peer=self.active, tag=tag)
        return {"kind": "SecureBoostPassive", "party": self.ctx.self_name, "splits": self.splits,
                "timings": dict(self.timer.seconds)}

    # -- commands ---------------------------------------------------------------------
    def _setup(self, cmd: dict, sub) -> None:
        raw = sub.recv(self.active, "kit")
        if not isinstance(raw, bytes):
            raise ProtocolError("the public kit must arrive as bytes", peer=self.active, tag="setup")
        # the passive side decides which key sizes it accepts and where its HE work runs
        t = time.perf_counter()
        self.kit = load_public_kit(raw, allow_insecure=self.allow_insecure, backend=self.backend)
        self.timer.add("setup", time.perf_counter() - t)  # with the HE backend's start-up
        if self.kit.scheme not in ("paillier", "ou", "mock"):
            raise ProtocolError(f"SecureBoost needs an additive scheme, got {self.kit.scheme!r}",
                                peer=self.active, tag="setup")
        if self.kit.scheme == "mock" and not self.allow_insecure:
            raise ProtocolError("the active party sent a mock kit: gradients would travel in the clear "
                                "(allowed only with allow_insecure=True, for tests)", peer=self.active, tag="setup")
        backend = getattr(self.kit, "backend", None)
        if self.n_jobs is not None and backend is not None:
            backend.n_jobs = max(1, int(self.n_jobs))
        self.ctx.register_kit(self.kit)
        mb = cmd.get("max_bin")
        if not isinstance(mb, int) or not 2 <= mb <= 65535:
            raise ProtocolError(f"invalid max_bin {mb!r}", peer=self.active, tag="setup")
        k = cmd.get("n_outputs")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 65536:
            raise ProtocolError(f"invalid n_outputs {k!r}", peer=self.active, tag="setup")
        self.n_outputs = k
        n = cmd.get("n_rows")
        if n != self.X.shape[0]:
            raise DataError(f"active party has {n} aligned rows, this party {self.X.shape[0]}: align first (PSI)")
        self.binner = QuantileBinner(max_bin=mb).fit(self.X)
        self.bins = self.binner.transform(self.X).astype(np.int32)
        self.n_bin_slots = self.binner.n_bin_slots
        ack: dict[str, Any] = {"n_features": int(self.X.shape[1]), "n_bin_slots": int(self.n_bin_slots)}
        self.fp = fingerprint("secureboost-passive", mb, self.X)
        if cmd.get("resume") is True and self.checkpoint is not None:
            ack["checkpoints"] = [[rid, step] for rid, step in self.checkpoint.offers(self.fp)]
        self.ctx.send(self.active, "setup-ack", ack)

    def _start(self, cmd: dict, tag: str) -> None:
        rid, step = cmd.get("run_id"), cmd.get("round")
        if not (isinstance(rid, str) and len(rid) == 32 and isinstance(step, int) and step >= 0):
            raise ProtocolError(f"malformed start command {cmd!r}", peer=self.active, tag=tag)
        if step == 0:
            self.splits = []
            if self.checkpoint is not None:
                self.checkpoint.clear()
        else:
            if self.checkpoint is None or (rid, step) not in set(self.checkpoint.offers(self.fp)):
                raise ProtocolError(f"asked to resume run {rid} after tree {step}, which this party has no "
                                    "checkpoint of", peer=self.active, tag=tag)
            meta, _ = self.checkpoint.load(step, meta_only=True)
            self.splits = [dict(s) for s in meta["splits"]]
            self._rng.bit_generator.state = meta["rng"]
            log.info("resume: continuing run %s after tree %d with %d private splits", rid, step, len(self.splits))
        self.run_id = rid

    def _checkpoint(self, cmd: dict, tag: str) -> None:
        step = cmd.get("round")
        if not isinstance(step, int) or step < 1 or self.run_id is None:
            raise ProtocolError(f"malformed checkpoint command {cmd!r}", peer=self.active, tag=tag)
        if self.checkpoint is not None:
            self.checkpoint.save(step, {"run_id": self.run_id, "fingerprint": self.fp, "splits": self.splits,
                                        "rng": self._rng.bit_generator.state})

    def _tree(self, cmd: dict, sub) -> None:
        rows = np.asarray(sub.recv(self.active, "rows"), dtype=np.int64)
        cols = np.asarray(sub.recv(self.active, "columns"), dtype=bool)
        layout = cmd.get("layout")
        if not isinstance(layout, list) or not 1 <= len(layout) <= self.n_outputs:
            raise ProtocolError("tree command without a layout of 1 to n_outputs chunks", peer=self.active,
                                tag="tree")
        for item in layout:
            if not (isinstance(item, dict) and isinstance(item.get("bits"), int) and isinstance(item.get("per"), int)
                    and 1 <= item["bits"] and 1 <= item["per"] and item["bits"] * item["per"] <= self.kit.plaintext_bits):
                raise ProtocolError(f"invalid packing layout {str(item)[:100]}", peer=self.active, tag="tree")
        self.enc = [sub.recv(self.active, f"gh-{c}") for c in range(len(layout))]
        if not all(isinstance(ca, CipherArray) and self.kit.same_key(ca.kit) for ca in self.enc):
            raise ProtocolError("tree gradients must be ciphertexts under the setup's key", peer=self.active,
                                tag="tree")
        if rows.size and (rows.min() < 0 or rows.max() >= self.X.shape[0] or np.any(np.diff(rows) <= 0)):
            raise ProtocolError("tree rows must be sorted, unique and in range", peer=self.active, tag="tree")
        if any(ca.shape != (rows.size,) for ca in self.enc) or cols.shape != (self.X.shape[1],):
            raise ProtocolError("tree payload shapes do not match", peer=self.active, tag="tree")
        self.layout = layout
        # how often each tree row has been split (a row is split once per level): bounded
        self.split_uses = np.zeros(self.X.shape[0], dtype=np.int32)
        self.tree_splits = 0
        # where the backend keeps them itself (a GPU), the tree's ciphertexts move there once
        t = time.perf_counter()
        self.held = [self.kit.hold(ca) for ca in self.enc]
        self.timer.add("histograms", time.perf_counter() - t)
        self.pos = np.full(self.X.shape[0], -1, dtype=np.int64)
        self.pos[rows] = np.arange(rows.size)
        self.columns = cols
        self.perm = self._rng.permutation(self.X.shape[1])  # position q shows feature perm[q]

    def _hist(self, cmd: dict, sub) -> None:
        rows = np.asarray(sub.recv(self.active, "rows"), dtype=np.int64)
        sizes = np.asarray(sub.recv(self.active, "sizes"), dtype=np.int64)
        if rows.ndim != 1 or sizes.ndim != 1 or (sizes.size and sizes.min() < 0) \
                or sizes.size > self.X.shape[0] + 1 or sizes.sum() != rows.size \
                or (rows.size and (rows.min() < 0 or rows.max() >= self.X.shape[0])) \
                or np.unique(rows).size != rows.size:
            raise ProtocolError("histogram request: rows must be unique and in range, node sizes "
                                "non-negative, as many as rows at most, and summing to the rows",
                                peer=self.active, tag="hist")
        pos = self.pos[rows]
        if rows.size and pos.min() < 0:
            raise ProtocolError("histogram request for rows outside the tree", peer=self.active, tag="hist")
        t = time.perf_counter()
        n_nodes, F, B = sizes.size, self.X.shape[1], self.n_bin_slots
        node_of = np.repeat(np.arange(n_nodes, dtype=np.int32), sizes)
        feats = self.perm[self.columns[self.perm]]  # masked-in features, in permuted order
        ids = self.bins[rows][:, feats] + (node_of * B)[:, None]
        # counts per (node, position, bin) in the order they will be sent
        order_q = np.flatnonzero(self.columns[self.perm])
        counts = np.zeros((n_nodes, F, B), dtype=np.int64)
        if rows.size and feats.size:
            for qi, q in enumerate(order_q):
                counts[:, q, :] = np.bincount(ids[:, qi], minlength=n_nodes * B).reshape(n_nodes, B)
        nonempty = counts > 0
        # the bucket_sum result is (masked feature, node·B + bin); gather the non-empty cells
        sel_q, sel_b = np.nonzero(np.transpose(nonempty, (1, 0, 2)).reshape(F, n_nodes * B)[order_q])
        # the mask is sent in (node, position, bin) order: reorder the selection to match
        node_idx, bin_idx = np.divmod(sel_b, B)
        qpos = order_q[sel_q]
        key = np.lexsort((bin_idx, qpos, node_idx))
        flat_sel = sel_q[key] * (n_nodes * B) + sel_b[key]
        comps = []
        for c, item in enumerate(self.layout):
            held = self.held[c]
            if feats.size and rows.size:
                if held is self.enc[c]:  # kept as it is: gather here (the CPU pairs features)
                    hist = paired_bucket_sum(self.kit, held[pos], ids, n_nodes, B)
                else:
                    hist = self.kit.bucket_sum_held(held, pos, ids, n_nodes * B)
                cells = hist.reshape(-1)[flat_sel]
            else:
                cells = self.enc[c][:0]
            self.timer.add("histograms", time.perf_counter() - t)
            t = time.perf_counter()
            if cells.shape[0]:
                comps.append(self.kit.shift_and_pack(cells, item["bits"], item["per"]))
            else:
                comps.append(cells)
            self.timer.add("compress", time.perf_counter() - t)
            t = time.perf_counter()
        t = time.perf_counter()
        sub.send(self.active, "nonempty", nonempty)
        for c, ca in enumerate(comps):
            sub.send(self.active, f"hist-{c}", ca)
        self.timer.add("network", time.perf_counter() - t)

    def _split(self, cmd: dict, sub) -> None:
        rows = np.asarray(sub.recv(self.active, "rows"), dtype=np.int64)
        sizes = np.asarray(sub.recv(self.active, "sizes"), dtype=np.int64)
        spec = np.asarray(sub.recv(self.active, "splits"), dtype=np.int64)
        if spec.ndim != 2 or spec.shape[1] != 3 or sizes.shape != (spec.shape[0],) or sizes.sum() != rows.size \
                or (sizes.size and sizes.min() < 1):
            raise ProtocolError("malformed split request", peer=self.active, tag="split")
        if rows.size and (rows.min() < 0 or rows.max() >= self.X.shape[0]):
            raise ProtocolError("split rows out of range", peer=self.active, tag="split")
        # only the tree's rows, each node's rows once, each row in one node of the request,
        # a row split at most 256 times (once per level), no more splits than tree rows
        if (rows.size and self.pos[rows].min() < 0) or np.unique(rows).size != rows.size:
            raise ProtocolError("split rows must be distinct rows of the tree", peer=self.active, tag="split")
        self.split_uses[rows] += 1
        self.tree_splits += spec.shape[0]
        if (rows.size and self.split_uses[rows].max() > 256) or self.tree_splits > max(1, int((self.pos >= 0).sum())):
            raise ProtocolError("more splits than the tree can have", peer=self.active, tag="split")
        masks, sids = [], []
        off = 0
        for (q, b, dl), size in zip(spec.tolist(), sizes.tolist()):
            if not (0 <= q < self.X.shape[1] and -1 <= b < self.n_bin_slots - 1 and dl in (0, 1)
                    and self.columns[self.perm[q]]):
                raise ProtocolError(f"invalid split {(q, b, dl)}", peer=self.active, tag="split")
            f = int(self.perm[q])
            masks.append(_route_own(self.bins, self.n_bin_slots - 1, f, b, bool(dl), rows[off: off + size]))
            off += size
            sids.append(len(self.splits))
            self.splits.append({"feature": f, "threshold": self.binner.threshold(f, b), "default_left": bool(dl)})
        sub.send(self.active, "mask", np.concatenate(masks) if masks else np.zeros(0, dtype=bool))
        sub.send(self.active, "split_ids", np.asarray(sids, dtype=np.int64))

    def _decide(self, cmd: dict, sub, X: np.ndarray) -> None:
        rows = np.asarray(sub.recv(self.active, "rows"), dtype=np.int64)
        sids = np.asarray(sub.recv(self.active, "split_ids"), dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
            raise ProtocolError("decision rows out of range", peer=self.active, tag="decide")
        if sids.size and (sids.min() < 0 or sids.max() >= len(self.splits)):
            raise ProtocolError("unknown split id", peer=self.active, tag="decide")
        if rows.ndim != 1 or sids.ndim != 1 or np.unique(rows).size != rows.size \
                or np.unique(sids).size != sids.size:
            raise ProtocolError("decision requests name distinct rows and split ids", peer=self.active,
                                tag="decide")
        sub.send(self.active, "decisions", _decide_bits(self.splits, X, rows, sids))


def _decide_bits(splits: list[dict], X: np.ndarray, rows: np.ndarray, sids: np.ndarray) -> np.ndarray:
    out = np.zeros((rows.size, sids.size), dtype=bool)
    for j, sid in enumerate(sids.tolist()):
        s = splits[sid]
        x = X[rows, int(s["feature"])]
        thr = float(s["threshold"])
        with np.errstate(invalid="ignore"):
            out[:, j] = np.where(np.isnan(x), bool(s["default_left"]), x <= thr)
    return np.packbits(out.ravel())


# ====================================================================== prediction
def predict_active(ctx, model: dict, X: np.ndarray, n_rounds: int | None = None) -> np.ndarray:
    """Raw margins (n_rows, K) for the aligned rows, asking passive parties for their decisions."""
    X = np.asarray(X, dtype=np.float64)
    trees = [Tree.from_dict(t) for t in model["trees"]]
    if n_rounds is not None:
        trees = trees[:n_rounds]
    passive = model["parties"][1:]
    n = X.shape[0]
    margin = np.tile(np.asarray(model["base_margin"], dtype=float), (n, 1))
    # ask every passive party for all its splits used by these trees, in one round trip
    wanted: dict[int, list[int]] = {b: [] for b in range(1, len(passive) + 1)}
    for t in trees:
        internal = np.flatnonzero(~t.is_leaf)
        for nid in internal[t.block[internal] > 0]:
            wanted[int(t.block[nid])].append(int(t.feature[nid]))
    decisions: dict[int, dict[int, np.ndarray]] = {}
    for b, name in enumerate(passive, start=1):
        sids = np.unique(np.asarray(wanted[b], dtype=np.int64))
        ctx.send(name, "predict", {"n_rows": n})
        ctx.sub("predict").send(name, "split_ids", sids)
    for b, name in enumerate(passive, start=1):
        sids = np.unique(np.asarray(wanted[b], dtype=np.int64))
        got = _unpack_decisions(ctx.sub("predict").recv(name, "decisions"), n, sids.size)
        decisions[b] = {int(s): got[:, j] for j, s in enumerate(sids.tolist())}
    for t in trees:
        dec = np.zeros((n, t.n_nodes), dtype=bool)
        internal = np.flatnonzero(~t.is_leaf)
        for nid in internal:
            b = int(t.block[nid])
            if b == 0:
                x = X[:, int(t.feature[nid])]
                with np.errstate(invalid="ignore"):
                    dec[:, nid] = np.where(np.isnan(x), bool(t.default_left[nid]), x <= t.threshold[nid])
            else:
                dec[:, nid] = decisions[b][int(t.feature[nid])]
        margin += t.value[t.apply_decisions(dec)]
    return margin


def predict_passive(ctx, model: dict, X: np.ndarray, active: str) -> None:
    """Serve one prediction: evaluate the requested own splits on ``X`` and send the bits."""
    X = np.asarray(X, dtype=np.float64)
    req = ctx.recv(active, "predict")
    if not isinstance(req, dict) or req.get("n_rows") != X.shape[0]:
        raise DataError(f"the active party predicts {req.get('n_rows') if isinstance(req, dict) else '?'} rows, "
                        f"this party holds {X.shape[0]}: align first (PSI)")
    sids = np.asarray(ctx.sub("predict").recv(active, "split_ids"), dtype=np.int64)
    if sids.size and (sids.min() < 0 or sids.max() >= len(model["splits"])):
        raise ProtocolError("unknown split id", peer=active, tag="predict/split_ids")
    if sids.ndim != 1 or np.unique(sids).size != sids.size:
        raise ProtocolError("split ids must be distinct", peer=active, tag="predict/split_ids")
    rows = np.arange(X.shape[0], dtype=np.int64)
    ctx.sub("predict").send(active, "decisions", _decide_bits(model["splits"], X, rows, sids))
