"""ECDH-PSI end to end: against Python set intersection, order agreement, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hefl import psi
from hefl.errors import ConfigError, DataError, ProtocolError, TimeoutError
from hefl.federation import run_local, run_threads
from hefl.psi._curve import HASH_NAME
from hefl.psi._ecdh import PROTOCOL_VERSION

PSI_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Unicode (no surrogates, as hypothesis' default) and long IDs.
id_text = st.one_of(st.text(min_size=0, max_size=12), st.text(min_size=100, max_size=400))


def run_psi(sets: dict[str, list[Any]], **kwargs: Any) -> dict[str, np.ndarray]:
    fns: dict[str, Callable[[Any], np.ndarray]] = {
        name: (lambda ctx, ids=ids: psi.intersect(ctx, ids, **kwargs)) for name, ids in sets.items()
    }
    return run_threads(fns, timeout=60.0)


def check(sets: dict[str, list[Any]], out: dict[str, np.ndarray]) -> list[str]:
    """The common invariants; returns the agreed list of shared IDs."""
    expected = set.intersection(*(set(map(str, s)) for s in sets.values()))
    lists = {}
    for name, ids in sets.items():
        rows = out[name]
        assert rows.dtype == np.int64
        assert len(set(rows.tolist())) == len(rows), "a row appears twice"
        shared = [str(ids[i]) for i in rows]
        assert set(shared) <= expected, "an ID outside the intersection leaked into the output"
        assert set(shared) == expected
        lists[name] = shared
    first = next(iter(lists.values()))
    assert all(v == first for v in lists.values()), "parties disagree on the order"
    return first


@st.composite
def two_sets(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    a = draw(st.lists(id_text, unique=True, max_size=25))
    kind = draw(st.sampled_from(["random", "empty", "disjoint", "identical", "subset", "superset"]))
    if kind == "empty":
        b: list[str] = []
    elif kind == "identical":
        b = list(reversed(a))
    elif kind in ("subset", "superset"):
        b = draw(st.lists(st.sampled_from(a), unique=True)) if a else []
        if kind == "superset":
            a, b = b, a
    else:
        extra = draw(st.lists(id_text, unique=True, max_size=25))
        pool = extra if kind == "disjoint" else a + extra
        b = list(dict.fromkeys(x for x in pool if kind != "disjoint" or x not in a))
        b = draw(st.permutations(b))
    return a, b


@PSI_SETTINGS
@given(pair=two_sets(), batch=st.sampled_from([1, 3, 4096]))
def test_two_parties_match_set_intersection(pair: tuple[list[str], list[str]], batch: int) -> None:
    sets = {"alice": pair[0], "bob": pair[1]}
    check(sets, run_psi(sets, batch_size=batch))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    universe=st.lists(id_text, unique=True, min_size=0, max_size=30),
    picks=st.lists(st.lists(st.booleans(), min_size=30, max_size=30), min_size=3, max_size=4),
)
def test_three_and_four_parties(universe: list[str], picks: list[list[bool]]) -> None:
    sets = {
        f"p{k}": [x for x, keep in zip(universe, pick) if keep] for k, pick in enumerate(picks)
    }
    check(sets, run_psi(sets, batch_size=4))


def test_many_batches_uneven_sizes_and_chosen_leader() -> None:
    rng = np.random.default_rng(1)
    sets = {n: [f"c{i}" for i in rng.choice(600, size=size, replace=False)]
            for n, size in (("a", 400), ("b", 500), ("c", 300), ("d", 450))}
    fns = {
        n: (lambda ctx, ids=ids, bs=bs: psi.intersect(ctx, ids, batch_size=bs, leader="c"))
        for (n, ids), bs in zip(sets.items(), (17, 64, 5, 1000))
    }
    shared = check(sets, run_threads(fns, timeout=60.0))
    assert len(shared) > 10


def test_order_is_not_input_order() -> None:
    # The agreed order comes from the blinded values, not from anyone's input order.
    ids = [f"id{i}" for i in range(200)]
    out = run_psi({"a": ids, "b": ids[::-1]})
    shared = check({"a": ids, "b": ids[::-1]}, out)
    assert shared != ids and shared != ids[::-1]


def test_integers_match_their_strings() -> None:
    out = run_psi({"a": [1, 2, 3, 40], "b": ["40", "3", "x"]})
    assert sorted(out["a"].tolist()) == [2, 3]
    assert [[1, 2, 3, 40][i] for i in out["a"]] == [int(["40", "3", "x"][i]) for i in out["b"]]


def test_empty_everything() -> None:
    out = run_psi({"a": [], "b": [], "c": []})
    assert all(v.size == 0 and v.dtype == np.int64 for v in out.values())
    out = run_psi({"a": ["x"], "b": []})
    assert out["a"].size == 0 and out["b"].size == 0


def test_duplicates_raise_or_drop() -> None:
    with pytest.raises(DataError, match="duplicate"):
        run_psi({"a": ["x", "y", "x"], "b": ["x"]})
    out = run_psi({"a": ["x", "y", "x", "z"], "b": ["z", "x", "q"]}, duplicates="drop")
    assert sorted(out["a"].tolist()) == [0, 3]  # first occurrences


def test_align_dataframe() -> None:
    fa = pd.DataFrame({"id": ["u1", "u2", "u3", "u4"], "age": [31, 42, 53, 64]})
    fb = pd.DataFrame({"cid": [4, 3, 9], "spend": [1.0, 2.0, 3.0]})
    fa["id"] = fa["id"].str[1:].astype(int).astype(str)  # "1".."4"
    out = run_threads({
        "a": lambda ctx: psi.align_dataframe(ctx, fa, "id"),
        "b": lambda ctx: psi.align_dataframe(ctx, fb, "cid"),
    })
    a, b = out["a"], out["b"]
    assert list(a.index) == [0, 1] and list(a.columns) == ["id", "age"]
    assert a["id"].tolist() == b["cid"].astype(str).tolist()
    assert sorted(a["age"].tolist()) == [53, 64]
    with pytest.raises(DataError, match="ID column"):
        run_threads({"a": lambda ctx: psi.align_dataframe(ctx, fa, "nope"),
                     "b": lambda ctx: psi.align_dataframe(ctx, fb, "cid")})
    twice = pd.DataFrame([["u1", "u9", 1]], columns=["cid", "cid", "x"])  # labels repeated
    with pytest.raises(DataError, match="2 columns named 'cid'"):
        run_threads({"a": lambda ctx: psi.align_dataframe(ctx, twice, "cid"),
                     "b": lambda ctx: psi.align_dataframe(ctx, fb, "cid")})


def test_two_sessions_and_a_subset_of_peers() -> None:
    def a(ctx: Any) -> tuple[np.ndarray, np.ndarray]:
        r1 = psi.intersect(ctx, ["1", "2", "3"], peers=["b"], session="first")
        r2 = psi.intersect(ctx, ["1", "2", "3"], session="second")
        return r1, r2

    def b(ctx: Any) -> tuple[np.ndarray, np.ndarray]:
        r1 = psi.intersect(ctx, ["2", "3"], peers=["a"], session="first")
        r2 = psi.intersect(ctx, ["2", "3"], session="second")
        return r1, r2

    def c(ctx: Any) -> tuple[None, np.ndarray]:
        return None, psi.intersect(ctx, ["3", "4"], session="second")

    out = run_threads({"a": a, "b": b, "c": c})
    assert sorted(out["a"][0].tolist()) == [1, 2]
    assert out["a"][1].tolist() == [2] and out["b"][1].tolist() == [1] and out["c"][1].tolist() == [0]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown PSI protocol"):
        run_psi({"a": ["1"], "b": ["1"]}, protocol="rsa")
    with pytest.raises(ConfigError, match="batch_size"):
        run_psi({"a": ["1"], "b": ["1"]}, batch_size=0)
    with pytest.raises(ConfigError, match="at least one peer"):
        run_threads({"a": lambda ctx: psi.intersect(ctx, ["1"])})
    with pytest.raises(ConfigError, match="unknown peer"):
        run_threads({"a": lambda ctx: psi.intersect(ctx, ["1"], peers=["zed"]),
                     "b": lambda ctx: None})
    with pytest.raises(ConfigError, match="leader"):
        run_psi({"a": ["1"], "b": ["1"]}, leader="zed")


def test_parties_must_agree_on_parameters() -> None:
    with pytest.raises(ProtocolError, match="leader"):
        run_threads({
            "a": lambda ctx: psi.intersect(ctx, ["1"], leader="a"),
            "b": lambda ctx: psi.intersect(ctx, ["1"], leader="b"),
        })


# ----------------------------------------------------------------------------- malicious peer


def _hello(size: int, batch: int = 4096) -> dict[str, Any]:
    return {"psi": "ecdh", "version": PROTOCOL_VERSION, "hash": HASH_NAME,
            "parties": ["a", "b"], "leader": "a", "size": size, "batch_size": batch}


def _bad_peer(payload: Any, size: int = 3) -> Callable[[Any], None]:
    """Party "b": says hello properly, then sends ``payload`` as its first blinded batch."""

    def b(ctx: Any) -> None:
        sub = ctx.sub("psi")
        sub.send("a", "hello", _hello(size))
        sub.recv("a", "hello")
        sub.send("a", "r1-0", payload)
        sub.recv("a", "never", timeout=20.0)  # stay up until "a" has failed

    return b


def _good_points(k: int) -> np.ndarray:
    from hefl.psi._curve import hash_to_point, mult_points, new_key

    raw = mult_points(new_key(), b"".join(hash_to_point(str(i).encode()) for i in range(k)))
    return np.frombuffer(raw, dtype=np.uint8).reshape(k, 32).copy()


def _with_row(row: bytes) -> np.ndarray:
    pts = _good_points(3)
    pts[1] = np.frombuffer(row, dtype=np.uint8)
    return pts


@pytest.mark.parametrize(
    "payload, match",
    [
        (_good_points(2), r"shape \(3, 32\)"),
        (_good_points(3).astype(np.int16), "uint8"),
        (b"\x00" * 96, "got bytes"),
        ({"points": []}, "got dict"),
        (_with_row(bytes(32)), "low-order point at row 1"),
        (_with_row((1).to_bytes(32, "little")), "low-order point at row 1"),
        (_with_row(b"\xff" * 32), "not a canonical X25519 value"),
        (_with_row((2**255 - 19).to_bytes(32, "little")), "canonical"),
    ],
    ids=["short", "dtype", "bytes", "dict", "zero", "order-4", "top-bit", "p"],
)
def test_malformed_points_are_protocol_errors(payload: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        run_threads({"a": lambda ctx: psi.intersect(ctx, ["x", "y", "z"]), "b": _bad_peer(payload)},
                    timeout=30.0)
    assert info.value.peer == "b" and info.value.tag.endswith("r1-0")


@pytest.mark.parametrize(
    "hello, match",
    [
        ("hi", "expected a dict"),
        ({**_hello(3), "hash": "md5"}, "hash"),
        ({**_hello(3), "size": -1}, "bad set size"),
        ({**_hello(3), "batch_size": 0}, "bad batch size"),
        ({**_hello(3), "parties": ["a", "b", "c"]}, "parties"),
    ],
)
def test_bad_hello_is_a_protocol_error(hello: Any, match: str) -> None:
    def b(ctx: Any) -> None:
        ctx.sub("psi").send("a", "hello", hello)
        ctx.sub("psi").recv("a", "never", timeout=20.0)

    with pytest.raises(ProtocolError, match=match):
        run_threads({"a": lambda ctx: psi.intersect(ctx, ["x"]), "b": b}, timeout=30.0)


def test_bad_match_positions_are_protocol_errors() -> None:
    # Leader "b" sends "a" (which unshuffles the leader's matches) out-of-range rows.
    def a(ctx: Any) -> np.ndarray:
        return psi.intersect(ctx, ["x", "y"], leader="b")

    def b(ctx: Any) -> None:
        sub = ctx.sub("psi")
        hello = {**_hello(1), "leader": "b"}
        sub.send("a", "hello", hello)
        sub.recv("a", "hello")
        sub.send("a", "r1-0", _good_points(1))
        sub.send("a", "tau-n", {"count": 1})
        sub.send("a", "tau-0", np.array([5]))
        sub.recv("a", "never", timeout=20.0)

    with pytest.raises(ProtocolError, match="out of range"):
        run_threads({"a": a, "b": b}, timeout=30.0)


def test_silent_peer_times_out() -> None:
    with pytest.raises(TimeoutError):
        run_threads({
            "a": lambda ctx: psi.intersect(ctx, ["x"], timeout=0.5),
            "b": lambda ctx: ctx.recv("a", "never", timeout=20.0),
        }, timeout=30.0)


# ----------------------------------------------------------------------------- processes


def test_processes_over_zeromq_with_worker_pool() -> None:
    rng = np.random.default_rng(7)
    sets = {n: [f"u{i}" for i in rng.choice(3000, size=2000, replace=False)] for n in "abc"}
    fns = {
        n: (lambda ctx, ids=ids, nj=nj: psi.intersect(ctx, ids, batch_size=300, n_jobs=nj))
        for (n, ids), nj in zip(sets.items(), (1, 2, 1))
    }
    check(sets, run_local(fns, timeout=120.0))


def test_repeated_full_values_blame_the_party_that_sent_them() -> None:
    # with three parties the leader (a) gets set c's fully blinded values from b, c's last
    # hop: when b sends repeated values, the error names b, not c
    ids = [f"u{i}" for i in range(10)]

    def b(ctx: Any) -> Any:
        ch = ctx.channel
        send = ch.send

        def corrupt(peer: str, tag: str, obj: Any) -> None:
            if tag == "psi/f2-0":
                obj = obj.copy()
                obj[1] = obj[0]
            send(peer, tag, obj)

        ch.send = corrupt
        return psi.intersect(ctx, ids)

    with pytest.raises(ProtocolError, match=r"repeated fully blinded values in the set of party 'c'") as info:
        run_threads({"a": lambda ctx: psi.intersect(ctx, ids), "b": b, "c": lambda ctx: psi.intersect(ctx, ids)})
    assert info.value.peer == "b"


def test_a_fast_party_cannot_flood_a_slow_one() -> None:
    # a's set is large, b's small: once b's only batch has passed, a has nothing left to
    # wait for and would send its whole set at once; the ring's window holds it back
    import time

    from hefl.psi._ecdh import WINDOW

    peak: list[int] = []

    def b(ctx: Any) -> Any:
        chan = ctx.channel
        state, recv = chan._state["a"], chan.recv

        def slow_recv(peer: str, tag: str, timeout: float | None = None) -> Any:
            peak.append(len(state.buffered))
            time.sleep(0.002)  # a slower machine
            return recv(peer, tag, timeout)

        chan.recv = slow_recv
        return psi.intersect(ctx, ["u1", "u2", "zz"], batch_size=5)

    out = run_threads({"a": lambda ctx: psi.intersect(ctx, [f"u{i}" for i in range(1000)], batch_size=5),
                       "b": b})
    assert len(out["a"]) == len(out["b"]) == 2
    assert WINDOW == 8 and max(peak) <= 12, max(peak)  # not ~190 of a's 200 batches
