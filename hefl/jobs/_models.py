"""Model adapters: how the job runner drives each model's roles.

An adapter turns a job's ``train`` step into the model's role calls and back into what
the runner reports (training curve, importance, predictions). Roles only ever get a
party context; the adapter never opens sockets either.
"""

from __future__ import annotations

import copy
import importlib
import logging
from abc import ABC, abstractmethod

import numpy as np

from hefl.errors import ConfigError, DataError

from .config import Job

__all__ = ["ModelAdapter", "get_adapter", "unavailable_reason"]

log = logging.getLogger("hefl.jobs")

_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}


class ModelAdapter(ABC):
    """The interface (see :class:`SecureBoostAdapter` for the reference implementation)."""

    name = ""
    curve_unit = "iteration"

    @abstractmethod
    def fit(self, ctx, role: str, job: Job, X: np.ndarray | None, y: np.ndarray | None, task: str,
            n_classes: int | None, reporter, *, checkpoint=None, resume: bool = False) -> dict:
        """Train this party's part; save its state to ``checkpoint`` (a
        :class:`hefl.checkpoint.Checkpointer`) after every tree / epoch and, with
        ``resume``, continue from the newest state all parties hold."""
        ...

    @abstractmethod
    def predict(self, ctx, role: str, job: Job, model: dict, X: np.ndarray | None) -> np.ndarray | None:
        """Active: probabilities (binary: P(1) of shape (n,); multiclass (n, K)) or values; others: None."""
        ...

    @abstractmethod
    def curve(self, model: dict) -> tuple[str, dict[str, list[float]]]:
        ...

    @abstractmethod
    def importance(self, role: str, model: dict, columns: list[str]) -> tuple[dict[str, float], str]:
        ...

    @abstractmethod
    def n_iterations(self, model: dict) -> int:
        ...

    def to_json(self, model: dict) -> dict:
        return model


class Watch:
    """A context proxy that reports what a role sends and receives (``on(kind, full_tag, obj)``)
    so the runner can turn protocol messages into progress (trees, epochs) without the roles
    knowing. Sub-contexts are watched too."""

    def __init__(self, ctx, on):
        self._ctx = ctx
        self._on = on

    def sub(self, name):
        return Watch(self._ctx.sub(name), self._on)

    def send(self, peer, tag, obj):
        self._ctx.send(peer, tag, obj)
        self._on("send", self._ctx.tag(tag), obj)

    def broadcast(self, tag, obj, peers=None):
        self._ctx.broadcast(tag, obj, peers)
        self._on("send", self._ctx.tag(tag), obj)

    def recv(self, peer, tag, timeout=None):
        obj = self._ctx.recv(peer, tag, timeout)
        self._on("recv", self._ctx.tag(tag), obj)
        return obj

    def gather(self, tag, peers=None, timeout=None):
        out = self._ctx.gather(tag, peers, timeout)
        for obj in out.values():
            self._on("recv", self._ctx.tag(tag), obj)
        return out

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class SecureBoostAdapter(ModelAdapter):
    name = "secureboost"
    curve_unit = "tree"

    def _params(self, job: Job, task: str, n_classes: int | None):
        from hefl.models.secureboost import BoostParams

        p = job.model_params().model_dump()
        rs = p.pop("random_state")
        return BoostParams(objective=_OBJECTIVES[task], n_classes=n_classes if task == "multiclass" else None,
                           random_state=job.config.seed if rs is None else rs, **p)

    def fit(self, ctx, role, job, X, y, task, n_classes, reporter, *, checkpoint=None, resume=False):
        from hefl.models.secureboost import ActiveParty, PassiveParty
        from hefl.models.secureboost.estimator import make_kit

        he = job.config.he
        if role == "active":
            params = self._params(job, task, n_classes)
            total = int(params.n_estimators)
            reporter.update("train", 0, total, stage="keygen")
            kit = make_kit(he.scheme, he.key_size, he.backend, he.n_jobs, he.allow_insecure)
            last = [-1]

            def on(kind, tag, cmd):
                if isinstance(cmd, dict) and cmd.get("op") == "tree" and isinstance(cmd.get("round"), int) \
                        and cmd["round"] > last[0]:
                    last[0] = cmd["round"]
                    reporter.update("train", cmd["round"], total)

            model = ActiveParty(Watch(ctx, on), X, y, params, kit, job.passive, n_jobs=he.n_jobs,
                                checkpoint=checkpoint, resume=resume).fit()
            reporter.update("train", len(model["train_loss"]), total,
                            **{model["metric"]: f"{model['train_loss'][-1]:.4g}"} if model["train_loss"] else {})
            return model
        if role == "passive":
            seen = [0]

            def on_passive(kind, tag, cmd):
                if not isinstance(cmd, dict):
                    return
                if cmd.get("op") == "tree":
                    seen[0] += 1
                    reporter.update("train", seen[0] - 1)
                elif cmd.get("op") == "finish":
                    reporter.update("train", seen[0])

            return PassiveParty(Watch(ctx, on_passive), X, job.active, n_jobs=he.n_jobs,
                                allow_insecure=he.allow_insecure, backend=he.backend, checkpoint=checkpoint).serve()
        raise ConfigError(f"secureboost has no {role} role")

    def predict(self, ctx, role, job, model, X):
        from hefl.models.secureboost import predict_active, predict_passive
        from hefl.models.secureboost._objective import get_objective

        if role == "active":
            margin = predict_active(ctx, model, X)
            obj = get_objective(model["objective"]["name"], model["objective"].get("n_outputs"))
            if model["objective"]["name"].startswith("reg:"):
                return np.asarray(margin)[:, 0]
            p = np.asarray(obj.transform(margin))
            if model["objective"]["name"].startswith("binary:"):
                return p.reshape(-1)
            return p
        predict_passive(ctx, model, X, job.active)
        return None

    def curve(self, model):
        series = {"train": list(model.get("train_loss", []))}
        if model.get("valid_loss"):
            series["validation (early stopping)"] = list(model["valid_loss"])
        return model.get("metric", "loss"), series

    def n_iterations(self, model):
        return len(model.get("trees", []))

    def importance(self, role, model, columns):
        out = {c: 0.0 for c in columns}
        if role == "active":
            for t in model["trees"]:
                for nid, left in enumerate(t["left"]):
                    if left >= 0 and t["block"][nid] == 0:
                        out[columns[int(t["feature"][nid])]] += float(t["gain"][nid])
            return out, "total split gain"
        for s in model["splits"]:
            out[columns[int(s["feature"])]] += 1.0
        return out, "splits chosen on the feature"

    def party_gain(self, model) -> dict[str, float]:
        """Active party only: share of the total split gain per party (what it already knows)."""
        tot = np.zeros(len(model["parties"]))
        for t in model["trees"]:
            for nid, left in enumerate(t["left"]):
                if left >= 0:
                    tot[int(t["block"][nid])] += float(t["gain"][nid])
        s = tot.sum()
        return {p: float(v / s) if s > 0 else 0.0 for p, v in zip(model["parties"], tot)}

    def to_json(self, model):
        from hefl.models.secureboost.estimator import strict_json_model

        return strict_json_model(copy.deepcopy(model))


def unavailable_reason(model: str) -> str | None:
    """``None`` when the model can run here, else why not."""
    if model == "secureboost":
        return None
    if model == "hetero_lr":
        try:
            mod = importlib.import_module("hefl.models.hetero_lr")
        except ImportError as exc:
            return f"model 'hetero_lr' is not available yet ({exc})"
        if not all(hasattr(mod, n) for n in ("ActiveParty", "PassiveParty")):
            return "model 'hetero_lr' is not available yet (hefl.models.hetero_lr has no ActiveParty/PassiveParty)"
        return None
    return f"unknown model {model!r}"


def get_adapter(model: str) -> ModelAdapter:
    why = unavailable_reason(model)
    if why:
        raise ConfigError(why)
    if model == "secureboost":
        return SecureBoostAdapter()
    from ._lr import HeteroLRAdapter

    return HeteroLRAdapter()


def encode_labels(y, task: str) -> tuple[np.ndarray, list | None]:
    """Class indices and the class list for classification; float values for regression."""
    if task == "regression":
        try:
            return np.asarray(y, dtype=np.float64), None
        except (TypeError, ValueError):
            raise DataError("task regression needs a numeric label") from None
    from sklearn.preprocessing import LabelEncoder

    enc = LabelEncoder().fit(np.asarray(y))
    classes = [c.item() if hasattr(c, "item") else c for c in enc.classes_]
    return enc.transform(np.asarray(y)).astype(np.float64), classes
