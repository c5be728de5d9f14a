"""A passive SecureBoost party checks every request of the active party (found in review):
a deviating peer gets a ProtocolError, not more of the party's data or a memory blow-up."""

from __future__ import annotations

import numpy as np
import pytest

from hefl.errors import ProtocolError
from hefl.he import mock, public_kit_to_wire
from hefl.models.secureboost._federated import PassiveParty, _unpack_decisions


class _Ctx:
    """The bits of a party context a PassiveParty method uses, fed by a script."""

    def __init__(self):
        self.inbox: dict[str, object] = {}
        self.sent: dict[str, object] = {}

    def recv(self, peer, tag, timeout=None):
        return self.inbox.pop(tag)

    def send(self, peer, tag, obj):
        self.sent[tag] = obj

    def register_kit(self, kit):
        pass

    def sub(self, name):
        return self


@pytest.fixture
def party():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    ctx = _Ctx()
    p = PassiveParty(ctx, X, "guest", allow_insecure=True, backend="cpu", permutation_seed=1)
    kit = mock.keygen()
    ctx.inbox["kit"] = public_kit_to_wire(kit.public_kit())
    p._setup({"max_bin": 8, "n_rows": 40, "n_outputs": 1}, ctx)
    rows = np.arange(0, 20)
    ctx.inbox.update({"rows": rows, "columns": np.array([True, True, False]),
                      "gh-0": kit.encrypt_encoded(np.zeros(20, dtype=object))})
    p._tree({"layout": [{"bits": 40, "per": 2}]}, ctx)
    return p, ctx, kit


def _split(p, ctx, rows, sizes, spec):
    ctx.inbox.update({"rows": np.asarray(rows), "sizes": np.asarray(sizes), "splits": np.asarray(spec)})
    p._split({}, ctx)
    return ctx.sent


def test_split_requests_stay_on_the_tree_and_its_masked_in_features(party):
    p, ctx, _ = party
    q_on = int(np.flatnonzero(p.columns[p.perm])[0])
    q_off = int(np.flatnonzero(~p.columns[p.perm])[0])
    assert _split(p, ctx, np.arange(10), [10], [[q_on, 2, 1]])["mask"].shape == (10,)  # an honest one
    for rows, sizes, spec, says in [
        (np.arange(20, 30), [10], [[q_on, 2, 1]], "distinct rows of the tree"),      # rows outside the tree
        ([3, 3, 4], [3], [[q_on, 2, 1]], "distinct rows of the tree"),                 # repeated rows
        (np.arange(10), [10], [[q_off, 2, 1]], "invalid split"),                       # a masked-out feature
        (np.arange(10), [10], [[q_on, p.n_bin_slots - 1, 1]], "invalid split"),        # the missing slot
        (np.arange(10), [0, 10], [[q_on, 1, 1], [q_on, 2, 1]], "malformed split"),     # an empty node
    ]:
        with pytest.raises(ProtocolError, match=says):
            _split(p, ctx, rows, sizes, spec)


def test_a_tree_cannot_take_more_splits_than_it_has_rows(party):
    p, ctx, _ = party
    q_on = int(np.flatnonzero(p.columns[p.perm])[0])
    with pytest.raises(ProtocolError, match="more splits than the tree can have"):
        for _ in range(100):  # the same rows again and again: one bit per row each time
            _split(p, ctx, np.arange(20), [20], [[q_on, 1, 1]])


def test_histogram_and_decision_requests_are_well_formed(party):
    p, ctx, _ = party
    for rows, sizes in (([0, 1], [-5, 7]), ([0, 1], [[1, 1]]), ([0, 0, 1], [3]), ([0], [0] * 100)):
        ctx.inbox.update({"rows": np.asarray(rows), "sizes": np.asarray(sizes)})
        with pytest.raises(ProtocolError, match="histogram request"):
            p._hist({}, ctx)
    p.splits.append({"feature": 0, "threshold": 0.0, "default_left": True})
    ctx.inbox.update({"rows": np.array([0, 0, 0]), "split_ids": np.array([0])})
    with pytest.raises(ProtocolError, match="distinct rows and split ids"):
        p._decide({}, ctx, p.X)


def test_the_active_party_checks_decision_lengths():
    assert _unpack_decisions(np.packbits(np.ones(30, dtype=bool)), 10, 3).shape == (10, 3)
    for n_bytes in (0, 1, 10**3):
        with pytest.raises(ProtocolError, match="bytes of decisions"):
            _unpack_decisions(np.zeros(n_bytes, dtype=np.uint8), 10, 3)


def test_layout_is_checked_before_waiting_for_its_ciphertexts(party):
    p, ctx, _ = party
    ctx.inbox.update({"rows": np.arange(5), "columns": np.array([True, True, True])})
    with pytest.raises(ProtocolError, match="layout of 1 to n_outputs chunks"):
        p._tree({"layout": [{"bits": 40, "per": 2}] * 1000}, ctx)  # would wait for gh-1 … gh-999


@pytest.mark.parametrize("op", ["tree", "hist", "split", "decide", "start", "checkpoint"])
def test_no_command_before_setup(op):
    ctx = _Ctx()
    ctx.inbox["cmd-0"] = {"op": op}
    p = PassiveParty(ctx, np.zeros((4, 2)), "guest", allow_insecure=True, backend="cpu")
    with pytest.raises(ProtocolError, match="before setup"):
        p.serve()
