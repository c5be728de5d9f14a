"""SecureBoost checkpoints: a run killed after any tree resumes to the very same model."""

from __future__ import annotations

import numpy as np
import pytest

from hefl.checkpoint import Checkpointer
from hefl.errors import ProtocolError
from hefl.federation import run_threads
from hefl.he import mock
from hefl.models.secureboost import ActiveParty, BoostParams, PassiveParty

from .helpers import make_data


class Crash(Exception):
    pass


class _Dies:
    """A context that raises (like a killed process) when it is about to send command ``at``."""

    def __init__(self, ctx, op: str, nth: int):
        self._ctx, self._op, self._left = ctx, op, nth

    def send(self, peer, tag, obj):
        if isinstance(obj, dict) and obj.get("op") == self._op:
            self._left -= 1
            if self._left < 0:
                raise Crash(f"killed before {self._op}")
        self._ctx.send(peer, tag, obj)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _run(tmp, X, y, params, *, resume=False, die=None, passive_dies=None, checkpoints=True):
    Xa, Xp = X[:, :3], X[:, 3:]
    ck = (lambda name: Checkpointer(tmp / name)) if checkpoints else (lambda name: None)

    def active(ctx):
        c = _Dies(ctx, *die) if die else ctx
        return ActiveParty(c, Xa, y, params, mock.keygen(), ["host"], checkpoint=ck("guest"), resume=resume).fit()

    def passive(ctx):
        # a fixed permutation seed (a passive party's secret) makes runs comparable: a fresh
        # seed breaks exact gain ties between passive features at random
        party = PassiveParty(ctx, Xp, "guest", allow_insecure=True, checkpoint=ck("host"), permutation_seed=11)
        if passive_dies is not None:  # the passive party dies when it is told to save tree ``n``
            orig = party._checkpoint

            def dying(cmd, tag):
                if cmd.get("round") == passive_dies:
                    raise Crash("passive killed")
                orig(cmd, tag)

            party._checkpoint = dying
        return party.serve()

    return run_threads({"guest": active, "host": passive}, timeout=120)


@pytest.fixture(scope="module")
def data():
    return make_data("binary", n=300, d=6, nan=0.1, seed=3)


PARAMS = BoostParams(n_estimators=6, max_depth=3, max_bin=16, subsample=0.8, colsample_bytree=0.8,
                     random_state=7, precompute=False)


@pytest.mark.parametrize("die, passive_dies, expect_from", [
    (("tree", 3), None, 3),        # active killed after 3 trees
    (("checkpoint", 4), None, 4),  # active saved tree 5, the passive party did not: both resume from 4
    (None, 2, 1),                  # passive killed while saving tree 2
    (("tree", 0), None, 0),        # killed before the first tree: resume trains from the start
])
def test_resume_gives_the_uninterrupted_model(tmp_path, data, die, passive_dies, expect_from, caplog):
    X, y = data
    ref = _run(tmp_path / "ref", X, y, PARAMS)
    with pytest.raises(Crash):
        _run(tmp_path / "run", X, y, PARAMS, die=die, passive_dies=passive_dies)
    caplog.set_level("INFO", logger="hefl")
    again = _run(tmp_path / "run", X, y, PARAMS, resume=True)
    assert again["guest"]["trees"] == ref["guest"]["trees"]
    assert again["guest"]["train_loss"] == ref["guest"]["train_loss"]
    assert [s["feature"] for s in again["host"]["splits"]] == [s["feature"] for s in ref["host"]["splits"]]
    np.testing.assert_array_equal([s["threshold"] for s in again["host"]["splits"]],
                                  [s["threshold"] for s in ref["host"]["splits"]])
    text = caplog.text
    if expect_from:
        assert f"after tree {expect_from}" in text
    else:
        assert "training from the first tree" in text


def test_changed_data_or_params_start_afresh(tmp_path, data, caplog):
    X, y = data
    with pytest.raises(Crash):
        _run(tmp_path, X, y, PARAMS, die=("tree", 3))
    caplog.set_level("INFO", logger="hefl")
    X2 = X.copy()
    X2[0, 4] += 1.0  # the passive party's data changed
    _run(tmp_path, X2, y, PARAMS, resume=True)
    assert "training from the first tree" in caplog.text
    assert "other data or parameters" in caplog.text


def test_early_stopping_state_survives_resume(tmp_path, data):
    X, y = data
    p = BoostParams(n_estimators=12, max_depth=2, max_bin=16, early_stopping_rounds=2, random_state=1,
                    learning_rate=1.0, precompute=False)
    ref = _run(tmp_path / "ref", X, y, p)["guest"]
    with pytest.raises(Crash):
        _run(tmp_path / "run", X, y, p, die=("tree", 4))
    got = _run(tmp_path / "run", X, y, p, resume=True)["guest"]
    assert got["trees"] == ref["trees"] and got["valid_loss"] == ref["valid_loss"]
    assert got["best_iteration"] == ref["best_iteration"]


def test_only_the_newest_checkpoints_are_kept_and_files_are_plain_data(tmp_path, data):
    X, y = data
    _run(tmp_path, X, y, PARAMS)
    ck = Checkpointer(tmp_path / "guest")
    assert ck.steps() == [4, 5, 6]
    meta, arrays = ck.load(6)
    assert set(arrays) == {"margin"} and meta["step"] == 6 and len(meta["trees"]) == 6
    with np.load(ck.directory / "ckpt-000006.npz", allow_pickle=False) as z:  # no pickled objects inside
        assert all(z[k].dtype != object for k in z.files)


def test_passive_refuses_a_checkpoint_it_does_not_hold(tmp_path, data):
    X, y = data
    _run(tmp_path, X, y, PARAMS)
    Checkpointer(tmp_path / "host").clear()

    class Lying(ActiveParty):  # claims the passive party offered tree 6
        def _start(self, fp, offers):
            return super()._start(fp, [set(Checkpointer(tmp_path / "guest").offers())])

    def active(ctx):
        return Lying(ctx, X[:, :3], y, PARAMS, mock.keygen(), ["host"], checkpoint=Checkpointer(tmp_path / "guest"),
                     resume=True).fit()

    def passive(ctx):
        return PassiveParty(ctx, X[:, 3:], "guest", allow_insecure=True, checkpoint=Checkpointer(tmp_path / "host")).serve()

    with pytest.raises(ProtocolError, match="no checkpoint of"):
        run_threads({"guest": active, "host": passive}, timeout=60, recv_timeout=10)


def test_resume_with_fewer_trees_ends_with_that_many(tmp_path, data, caplog):
    # killed after 5 of 6 trees, resumed with n_estimators=3: the 3-tree model, not 5
    import dataclasses

    X, y = data
    fewer = dataclasses.replace(PARAMS, n_estimators=3)
    ref = _run(tmp_path / "ref", X, y, fewer)
    with pytest.raises(Crash):
        _run(tmp_path / "run", X, y, PARAMS, die=("tree", 5))
    caplog.set_level("INFO", logger="hefl")
    again = _run(tmp_path / "run", X, y, fewer, resume=True)
    assert len(again["guest"]["trees"]) == 3
    assert again["guest"]["trees"] == ref["guest"]["trees"]
    assert "lies past this run's end" in caplog.text
