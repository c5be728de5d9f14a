"""Plaintext gradient boosting on the SecureBoost core: the reference implementation.

:class:`PlainBooster` trains exactly what the federated SecureBoost protocol trains, but
with every party's columns in one process and nothing encrypted. The federated version
must reproduce its trees and predictions; its tests compare against XGBoost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hefl.errors import ConfigError, DataError

from ._binning import QuantileBinner
from ._objective import Objective, get_objective
from ._split import FeatureBlocks, SplitParams
from ._tree import GrowParams, LocalHistogramProvider, Tree, TreeGrower

__all__ = ["PlainBooster"]

FloatArray = NDArray[np.float64]

_MULTI_STRATEGIES = ("multi_output_tree", "one_output_per_tree")


class PlainBooster:
    """Histogram gradient boosting in plaintext, matching XGBoost's ``hist`` method.

    Parameters
    ----------
    objective : {"binary:logistic", "multi:softprob", "multi:softmax", "reg:squarederror"}
    n_estimators : int, default=100
        Boosting rounds.
    learning_rate : float, default=0.3
    max_depth : int, default=6
        0 means unlimited (then ``max_leaves`` is required).
    max_leaves : int, default=0
    grow_policy : {"depthwise", "lossguide"}, default="depthwise"
    max_bin : int, default=32
    reg_lambda : float, default=1.0
    gamma : float, default=0.0
        Minimum loss change to split (XGBoost ``min_split_loss``).
    min_child_weight : float, default=1.0
    subsample : float, default=1.0
        Fraction of rows drawn (Bernoulli) for each round.
    colsample_bytree : float, default=1.0
        Fraction of columns drawn for each tree.
    base_score : float, optional
        Intercept in XGBoost's convention (probability for ``binary:logistic``); by
        default it is estimated from the labels like XGBoost 3.x does.
    num_class : int, optional
        Number of classes for the multi-class objectives (default: ``max(y) + 1``).
    multi_strategy : {"multi_output_tree", "one_output_per_tree"}
        Multi-class only: one tree with vector leaves per round, or one tree per class.
    early_stopping_rounds : int, optional
        Stop when the metric on the last ``eval_set`` has not improved for this many
        rounds; predictions then use the best round.
    random_state : int, optional
        Seed for row and column sampling.

    Attributes
    ----------
    binner_ : QuantileBinner
    objective_ : Objective
    base_margin_ : ndarray of shape (K,)
    trees_ : list of Tree
    tree_output_ : list of int
        Output each tree adds to (``-1``: all outputs, vector leaves).
    tree_round_ : list of int
    best_iteration_ : int
        Last round used for prediction.
    evals_result_ : list of list of float
        Metric per round for each evaluation set.
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        objective: str = "binary:logistic",
        n_estimators: int = 100,
        learning_rate: float = 0.3,
        max_depth: int = 6,
        max_leaves: int = 0,
        grow_policy: str = "depthwise",
        max_bin: int = 32,
        reg_lambda: float = 1.0,
        gamma: float = 0.0,
        min_child_weight: float = 1.0,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        base_score: float | None = None,
        num_class: int | None = None,
        multi_strategy: str = "multi_output_tree",
        early_stopping_rounds: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.grow_policy = grow_policy
        self.max_bin = max_bin
        self.reg_lambda = reg_lambda
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.base_score = base_score
        self.num_class = num_class
        self.multi_strategy = multi_strategy
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    # ---------------------------------------------------------------- params
    _PARAM_NAMES = (
        "objective", "n_estimators", "learning_rate", "max_depth", "max_leaves",
        "grow_policy", "max_bin", "reg_lambda", "gamma", "min_child_weight", "subsample",
        "colsample_bytree", "base_score", "num_class", "multi_strategy",
        "early_stopping_rounds", "random_state",
    )

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as a dict."""
        return {k: getattr(self, k) for k in self._PARAM_NAMES}

    def _grow_params(self) -> GrowParams:
        return GrowParams(
            max_depth=int(self.max_depth),
            max_leaves=int(self.max_leaves),
            grow_policy=self.grow_policy,
            learning_rate=float(self.learning_rate),
            split=SplitParams(
                reg_lambda=float(self.reg_lambda),
                gamma=float(self.gamma),
                min_child_weight=float(self.min_child_weight),
            ),
        )

    def _check_params(self) -> None:
        if int(self.n_estimators) < 1:
            raise ConfigError(f"n_estimators must be >= 1, got {self.n_estimators}")
        for name in ("subsample", "colsample_bytree"):
            v = float(getattr(self, name))
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {v}")
        if self.multi_strategy not in _MULTI_STRATEGIES:
            raise ConfigError(f"multi_strategy must be one of {_MULTI_STRATEGIES}, "
                              f"got {self.multi_strategy!r}")
        if self.early_stopping_rounds is not None and int(self.early_stopping_rounds) < 1:
            raise ConfigError(
                f"early_stopping_rounds must be >= 1, got {self.early_stopping_rounds}")

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        sample_weight: ArrayLike | None = None,
        eval_set: Sequence[tuple[ArrayLike, ArrayLike]] | None = None,
        feature_blocks: Sequence[int] | None = None,
    ) -> PlainBooster:
        """Train the ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks missing values.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
        eval_set : sequence of (X, y), optional
            Evaluation sets; the last one drives early stopping.
        feature_blocks : sequence of int, optional
            Number of columns of each party, in column order (only recorded in the
            trees' ``block``/``feature`` fields; results do not depend on it).

        Returns
        -------
        self : PlainBooster
        """
        self._check_params()
        grow_params = self._grow_params()
        X_arr = np.asarray(X, dtype=np.float64)
        if X_arr.ndim != 2:
            raise DataError(f"X must be 2-D, got shape {X_arr.shape}")
        n, d = X_arr.shape
        if n == 0:
            raise DataError("X has no rows")
        blocks = FeatureBlocks(tuple(feature_blocks)) if feature_blocks is not None \
            else FeatureBlocks.single(d)
        if blocks.n_features != d:
            raise DataError(f"feature_blocks {blocks.sizes} cover {blocks.n_features} columns, "
                            f"X has {d}")

        y_raw = np.asarray(y, dtype=np.float64).reshape(-1)
        if y_raw.size != n:
            raise DataError(f"y has {y_raw.size} labels for {n} rows")
        n_class = self.num_class
        if self.objective.startswith("multi:") and n_class is None:
            n_class = int(np.nanmax(y_raw)) + 1
        obj = get_objective(self.objective, n_class)
        y_arr = obj.check_labels(y_raw)
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if w.size != n or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise DataError("sample_weight must have one finite, non-negative entry per row")

        binner = QuantileBinner(max_bin=int(self.max_bin)).fit(X_arr)
        bins = binner.transform(X_arr)
        k = obj.n_outputs
        base = (obj.init_margin(y_arr, w) if self.base_score is None
                else obj.margin_from_base_score(float(self.base_score)))

        evals = []
        for Xe, ye in (eval_set or []):
            be = binner.transform(np.asarray(Xe, dtype=np.float64))
            evals.append((be, obj.check_labels(ye), np.tile(base, (be.shape[0], 1))))

        self.binner_ = binner
        self.objective_: Objective = obj
        self.base_margin_: FloatArray = base
        self.n_features_in_: int = d
        self.feature_blocks_ = blocks
        self.trees_: list[Tree] = []
        self.tree_output_: list[int] = []
        self.tree_round_: list[int] = []
        self.evals_result_: list[list[float]] = [[] for _ in evals]

        rng = np.random.default_rng(self.random_state)
        provider = LocalHistogramProvider(bins, binner.n_bin_slots, blocks)
        margin = np.tile(base, (n, 1))
        per_class = k > 1 and self.multi_strategy == "one_output_per_tree"
        missing = binner.missing_bin
        best_score = np.inf
        best_round = -1
        n_rounds = int(self.n_estimators)

        for rnd in range(n_rounds):
            gh = obj.gh(y_arr, margin, w)
            rows = None
            if self.subsample < 1.0:
                rows = np.flatnonzero(rng.random(n) < float(self.subsample))
            outputs = list(range(k)) if per_class else [-1]
            new_trees = []
            for out in outputs:
                mask = None
                if self.colsample_bytree < 1.0:  # a fresh column sample for every tree
                    n_keep = max(1, int(np.floor(float(self.colsample_bytree) * d)))
                    mask = np.zeros(d, dtype=bool)
                    mask[rng.choice(d, size=n_keep, replace=False)] = True
                gh_t = gh if out < 0 else gh[:, [out, k + out]]
                grower = TreeGrower(grow_params, provider, blocks=blocks, feature_mask=mask)
                res = grower.grow(gh_t, rows)
                tree = res.tree
                pos = res.positions
                # rows outside the subsample are routed; the others already sit in leaves
                oob = np.flatnonzero(pos < 0)
                if oob.size:
                    pos[oob] = tree.apply_binned(bins[oob], missing)
                self._add_to_margin(margin, tree.value[pos], out)
                new_trees.append((tree, out))

            for tree, out in new_trees:
                tree.fill_thresholds(
                    lambda b, f, kb: binner.threshold(blocks.global_index(b, f), kb))
                self.trees_.append(tree)
                self.tree_output_.append(out)
                self.tree_round_.append(rnd)

            if evals:
                for i, (be, ye, me) in enumerate(evals):
                    for tree, out in new_trees:
                        self._add_to_margin(me, tree.predict_binned(be, missing), out)
                    self.evals_result_[i].append(obj.loss(ye, me))
                score = self.evals_result_[-1][-1]
                if score < best_score:
                    best_score, best_round = score, rnd
                elif (self.early_stopping_rounds is not None
                      and rnd - best_round >= int(self.early_stopping_rounds)):
                    break

        self.best_iteration_: int = (best_round if (evals and self.early_stopping_rounds)
                                     else self.tree_round_[-1])
        self.best_score_: float | None = best_score if evals else None
        return self

    @staticmethod
    def _add_to_margin(margin: FloatArray, values: FloatArray, out: int) -> None:
        if out < 0:
            margin += values
        else:
            margin[:, out] += values[:, 0]

    # --------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "trees_"):
            raise ConfigError("PlainBooster is not fitted yet; call fit() first")

    def predict_margin(self, X: ArrayLike, *, n_rounds: int | None = None) -> FloatArray:
        """Raw margins, shape (n_samples, K).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        n_rounds : int, optional
            Use the first ``n_rounds`` rounds; default ``best_iteration_ + 1``.
        """
        self._check_fitted()
        X_arr = np.asarray(X, dtype=np.float64)
        if X_arr.ndim != 2 or X_arr.shape[1] != self.n_features_in_:
            raise DataError(f"X must have shape (n, {self.n_features_in_}), got {X_arr.shape}")
        last = self.best_iteration_ if n_rounds is None else int(n_rounds) - 1
        margin = np.tile(self.base_margin_, (X_arr.shape[0], 1))
        for tree, out, rnd in zip(self.trees_, self.tree_output_, self.tree_round_):
            if rnd > last:
                break
            self._add_to_margin(margin, tree.predict(X_arr), out)
        return margin

    def predict(self, X: ArrayLike, *, n_rounds: int | None = None) -> FloatArray:
        """Transformed predictions, like XGBoost's ``Booster.predict``.

        Returns
        -------
        ndarray
            Probabilities of class 1, shape (n,), for ``binary:logistic``; class
            probabilities, shape (n, K), for ``multi:softprob``; values, shape (n,),
            for regression.
        """
        self._check_fitted()
        return self.objective_.transform(self.predict_margin(X, n_rounds=n_rounds))

    # --------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able model (parameters, binner, intercept and trees)."""
        self._check_fitted()
        return {
            "kind": "PlainBooster",
            "params": self.get_params(),
            "objective": {"name": self.objective_.name, "n_outputs": self.objective_.n_outputs},
            "base_margin": self.base_margin_.tolist(),
            "binner": self.binner_.to_dict(),
            "feature_blocks": list(self.feature_blocks_.sizes),
            "trees": [t.to_dict() for t in self.trees_],
            "tree_output": list(self.tree_output_),
            "tree_round": list(self.tree_round_),
            "best_iteration": int(self.best_iteration_),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlainBooster:
        """Rebuild a model written by :meth:`to_dict`."""
        if data.get("kind") != "PlainBooster":
            raise DataError(f"not a PlainBooster description (kind={data.get('kind')!r})")
        obj = cls(**data["params"])
        o = data["objective"]
        obj.objective_ = get_objective(o["name"], o["n_outputs"] if o["n_outputs"] > 1 else None)
        obj.base_margin_ = np.asarray(data["base_margin"], dtype=np.float64)
        obj.binner_ = QuantileBinner.from_dict(data["binner"])
        obj.n_features_in_ = obj.binner_.n_features_in_
        obj.feature_blocks_ = FeatureBlocks(tuple(data["feature_blocks"]))
        obj.trees_ = [Tree.from_dict(t) for t in data["trees"]]
        obj.tree_output_ = [int(v) for v in data["tree_output"]]
        obj.tree_round_ = [int(v) for v in data["tree_round"]]
        obj.best_iteration_ = int(data["best_iteration"])
        obj.evals_result_ = []
        obj.best_score_ = None
        return obj
