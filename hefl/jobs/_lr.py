"""The job runner's adapter for hetero LR (:mod:`hefl.models.hetero_lr`).

Training runs the model's roles (``ActiveParty`` / ``PassiveParty`` / ``Arbiter``): the
two-party protocol without an arbiter party in the job, the arbiter protocol with one.
Every role saves its state after each epoch to the runner's checkpointer, and ``hefl run
--resume`` continues from the newest epoch all parties saved (see the roles' module).

Prediction (evaluate / predict steps): each passive party sends its partial scores
``X_k w_k`` of the rows to predict to the active party, which adds its own
``X_A w_A + b`` and applies the link. So the active party learns the passive parties'
per-row partial scores of the predicted rows (as in FATE's hetero LR); it never learns
their weights or features. The arbiter takes no part in prediction.
"""

from __future__ import annotations

import re

import numpy as np

from hefl.errors import ConfigError, ProtocolError

from ._models import ModelAdapter, Watch

__all__ = ["HeteroLRAdapter"]

_EPOCH = re.compile(r"(?:^|/)p(\d+)/e(\d+)/stop$")


class HeteroLRAdapter(ModelAdapter):
    name = "hetero_lr"
    curve_unit = "epoch"

    def _config(self, job, task: str):
        from hefl.models.hetero_lr import LRConfig

        p = job.model_params().model_dump()
        p.pop("random_state")
        he = job.config.he
        return LRConfig(
            task="linear" if task == "regression" else "logistic",
            protocol="arbiter" if job.arbiter else "two_party",
            he=he.scheme, key_size=he.key_size, allow_insecure=he.allow_insecure,
            n_jobs=he.n_jobs, backend=he.backend,
            active=job.active, passives=tuple(job.passive), arbiter=job.arbiter,
            recv_timeout=float(job.config.timeouts.recv), **p,
        ).validate()

    def fit(self, ctx, role, job, X, y, task, n_classes, reporter, *, checkpoint=None, resume=False):
        from hefl.models.hetero_lr import ActiveParty, Arbiter, PassiveParty

        params = job.model_params()
        if role == "active":
            # every party learns the task from the setup message; the arbiter and the passive
            # parties build their config from the same job file, so only the active one needs it
            cfg = self._config(job, task)
            if task == "multiclass":
                targets = (y[:, None] == np.arange(n_classes)[None, :]).astype(np.float64)
            else:
                targets = np.asarray(y, dtype=np.float64)[:, None]
            n_problems = targets.shape[1]
        else:
            # passive / arbiter: task only changes the link, which they never apply in training
            cfg = self._config(job, task or "binary")
            n_problems = None
        total = int(params.max_iter) * (n_problems or 1)

        def on(kind, tag, obj):
            m = _EPOCH.search(tag)
            if m:
                c, e = int(m.group(1)), int(m.group(2))
                reporter.update("train", c * int(params.max_iter) + e + 1, total if role == "active" else None)

        seed = job.config.seed if params.random_state is None else params.random_state
        if job.config.tee is not None and cfg.protocol == "arbiter":
            # the arbiter runs as the attested TEE aggregator (hefl.tee): same roles, wrapped contexts
            from hefl.tee._jobs import run_lr_role

            if role == "active":
                role_fn = ActiveParty(X, targets, cfg, seed=int(seed), checkpoint=checkpoint, resume=resume).run
            elif role == "passive":
                role_fn = PassiveParty(X, cfg, checkpoint=checkpoint).run
            else:
                role_fn = Arbiter(cfg, checkpoint=checkpoint).run
            out = run_lr_role(job, ctx.self_name, role, ctx, role_fn, lambda g: Watch(g, on))
            return self._model(role, task, out)
        wctx = Watch(ctx, on)
        if role == "active":
            out = ActiveParty(X, targets, cfg, seed=int(seed), checkpoint=checkpoint, resume=resume).run(wctx)
        elif role == "passive":
            out = PassiveParty(X, cfg, checkpoint=checkpoint).run(wctx)
        elif role == "arbiter":
            out = Arbiter(cfg, checkpoint=checkpoint).run(wctx)
        else:
            raise ConfigError(f"hetero_lr has no {role} role")
        return self._model(role, task, out)

    @staticmethod
    def _model(role, task, out):
        if role == "active":
            return {"kind": "HeteroLRActive", "task": task,
                    "coef": [np.asarray(w).tolist() for w in out["coef"]],
                    "intercept": [float(b) for b in out["intercept"]],
                    "n_iter": [int(i) for i in out["n_iter"]],
                    "loss_curve": [list(map(float, c)) for c in out["loss_curve"]],
                    "epoch_seconds": [list(map(float, c)) for c in out["epoch_seconds"]]}
        if role == "passive":
            return {"kind": "HeteroLRPassive", "coef": [np.asarray(w).tolist() for w in out["coef"]]}
        if role == "arbiter":
            curves = out.get("loss_curve", [])
            return {"kind": "HeteroLRArbiter", "loss_curve": [list(map(float, c)) for c in curves]}
        raise ConfigError(f"hetero_lr has no {role} role")

    def predict(self, ctx, role, job, model, X):
        if role == "arbiter":
            return None
        W = np.asarray(model["coef"], dtype=np.float64)
        if X.shape[0] and not np.all(np.isfinite(X)):
            from hefl.errors import DataError

            raise DataError("hetero_lr cannot predict rows with missing (NaN) features")
        if role == "passive":
            ctx.send(job.active, "scores", X @ W.T)
            return None
        scores = X @ W.T + np.asarray(model["intercept"], dtype=np.float64)[None, :]
        for p in job.passive:
            part = np.asarray(ctx.recv(p, "scores"), dtype=np.float64)
            if part.shape != scores.shape:
                raise ProtocolError(f"partial scores of shape {part.shape}, expected {scores.shape}",
                                    peer=p, tag=ctx.tag("scores"))
            scores = scores + part
        if model["task"] == "regression":
            return scores[:, 0]
        from hefl.models.hetero_lr._core import sigmoid

        prob = sigmoid(scores)
        if prob.shape[1] == 1:
            return prob[:, 0]
        return prob / prob.sum(axis=1, keepdims=True)

    def curve(self, model):
        curves = model.get("loss_curve") or []
        if len(curves) == 1:
            return "loss", {"train": curves[0]}
        return "loss", {f"train (class {c})": v for c, v in enumerate(curves)}

    def n_iterations(self, model):
        if "n_iter" in model:
            return int(max(model["n_iter"])) if model["n_iter"] else 0
        return max((len(c) for c in model.get("loss_curve", [])), default=0)

    def importance(self, role, model, columns):
        W = np.abs(np.asarray(model.get("coef", []), dtype=np.float64))
        if W.size == 0:
            return {}, "|weight|"
        w = W.mean(axis=0)
        return {c: float(v) for c, v in zip(columns, w)}, "|weight| (features as given)"
