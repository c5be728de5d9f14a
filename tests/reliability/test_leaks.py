"""Leak checks: real protocols, real keys (1024-bit Paillier / OU, CKKS), every message
every party receives recorded at the channel (see ``leakcheck``), and searched for what
the design (DESIGN.md §10, the role docstrings) says a party must never receive:

* passive parties and the arbiter: plaintext labels, gradients / hessians (and their
  quantised and packed integer forms), LR residual terms and residuals;
* the active party: passive raw features or split thresholds, passive scores in training;
* nobody: another party's features, weights or gradients, any secret key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hefl.federation import run_threads
from hefl.he import CipherArray, paillier
from hefl.he.ckks import CKKSArray

from .leakcheck import (
    Opaque,
    Recorder,
    check_arrays,
    check_ckks_contexts,
    check_float_lengths,
    check_key_material,
    check_no_plain_floats,
    check_residues,
    check_rows,
    check_values,
    instrument_hetero_lr,
    instrument_psi,
    instrument_secureboost,
    key_material,
    key_patterns,
    leaves,
    lr_secrets,
    row_sets,
)

DATA = Path(__file__).resolve().parents[1] / "data"
KEY = {"allow_insecure": True, "backend": "cpu", "n_jobs": 1}


def _clean(*findings: list[str]) -> None:
    flat = [f for group in findings for f in group]
    assert not flat, "leaks:\n" + "\n".join(flat[:20])


def _synthetic(n: int, d: int, seed: int, nan: float = 0.05):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (1.5 * X[:, 0] - X[:, d // 2] ** 2 + np.sin(2 * X[:, -1]) + rng.normal(scale=0.8, size=n) > -0.5)
    X[rng.random(X.shape) < nan] = np.nan
    return X, y.astype(float)


def _breast(n: int):
    from sklearn.preprocessing import StandardScaler

    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    df = g.merge(h, on="id").iloc[:n]
    y = df["y"].to_numpy(dtype=float)
    X = StandardScaler().fit_transform(df.drop(columns=["id", "y"]).to_numpy(dtype=float))
    return X, y


# ============================================================================ the harness itself


@pytest.fixture(scope="module")
def kits():
    from hefl.he import ckks

    return {"paillier": paillier.keygen(1024, **KEY), "ckks": ckks.keygen()}


def test_harness_catches_every_kind_of_leak(kits):
    """Each check fires on a deliberately leaky message sent through the recorded
    channel, names that message only, and stays quiet on the clean messages around it."""
    pk, ck = kits["paillier"], kits["ckks"]
    X, y = _synthetic(64, 4, seed=1, nan=0.0)
    g = np.random.default_rng(2).normal(size=64)
    packed = np.random.default_rng(3).integers(1, 2**63, size=(64, 2), dtype=np.uint64)
    rows = np.arange(3, 60, 2, dtype=np.int64)
    thresholds = [0.123456789, -1.5051]
    scalar = bytes(np.random.default_rng(4).integers(0, 256, 32, dtype=np.uint8))
    n = pk.n
    leaky = {
        "labels-as-bool": y.astype(bool),
        "labels-at-rows": y[rows].astype(np.int8),
        "grad-reordered": g[::-1].copy(),
        "grad-float32": g.astype(np.float32),
        "feature-subset": {"v": X[rows[:5], 2]},
        "threshold-json": {"cut": thresholds[1]},
        "packed-row": packed[7:9].copy(),
        "per-row-floats": np.linspace(0.0, 1.0, 64),
        "small-residue": np.array([[12345, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.uint64),
        "p-bytes": pk._p.to_bytes(64, "big"),
        "q-decimal": {"note": str(pk._q)},
        "psi-scalar-hex": ["id-1", scalar.hex()],
        "ckks-secret": ck.context.serialize(save_secret_key=True, save_galois_keys=False,
                                           save_relin_keys=False),
    }
    clean = {"kit": pk.public_kit().to_bytes(), "ckks-kit": ck.context.serialize(save_secret_key=False, save_galois_keys=False,
                                                 save_relin_keys=False), "enc-labels": pk.public_kit().encrypt(y),
             "rows": rows, "ok-residue": np.array([[int.from_bytes(b"\xa5" * 8, "little")] * 16], np.uint64),
             "counts": np.arange(64), "flag": True}

    def guest(ctx):
        for tag, obj in {**clean, **leaky}.items():
            ctx.send("host", tag, obj)

    def host(ctx):
        ctx.register_kit(pk.public_kit())  # a 1024-bit kit object would be refused on receipt
        return {tag: ctx.recv("guest", tag) for tag in [*clean, *leaky]}

    with Recorder() as rec:
        got = run_threads({"guest": guest, "host": host}, timeout=60)["host"]
    assert isinstance(got["enc-labels"], CipherArray)
    msgs = {m.tag: m for m in rec.received_by("host")}
    assert set(msgs) == set(clean) | set(leaky)
    assert all(m.consumed for m in msgs.values())  # decoded objects are attached
    assert isinstance(msgs["enc-labels"].view, Opaque) and isinstance(msgs["kit"].view, bytes)

    def only(findings: list[str], *tags: str, maybe: tuple[str, ...] = ()) -> None:
        hit = {f.split()[1].split("[")[0].rstrip(":") for f in findings}
        assert set(tags) <= hit <= set(tags) | set(maybe), findings

    only(check_arrays(rec, "host", {"labels": [y, y[rows]]}), "labels-as-bool", "labels-at-rows")
    only(check_arrays(rec, "host", {"g": g}), "grad-reordered", "grad-float32")
    # float32 copies are not exact (only the values float32 happens to round exactly): arrays catch them
    only(check_values(rec, "host", {"g": g}), "grad-reordered", maybe=("grad-float32",))
    only(check_values(rec, "host", {"feature": X[:, 2], "thresholds": thresholds}),
         "feature-subset", "threshold-json")
    only(check_rows(rec, "host", {"packed g/h": packed}), "packed-row")
    only(check_float_lengths(rec, "host", [64]), "per-row-floats", "grad-reordered", "grad-float32")
    only(check_no_plain_floats(rec, "host", allow=("per-row", "grad")), "feature-subset", "threshold-json")
    only(check_residues(rec, "host", [n]), "small-residue")
    pats = {**key_patterns(key_material(pk)), **key_patterns(key_material(ck)),
            **key_patterns({"scheme": "psi", "scalar": scalar})}
    only(check_key_material(rec, pats), "p-bytes", "q-decimal", "ckks-secret", "psi-scalar-hex")
    findings, seen = check_ckks_contexts(rec)
    assert seen == 2 and len(findings) == 1 and "ckks-secret" in findings[0]
    # and the same checks on the clean messages alone find nothing
    ok = [m for m in rec.messages if m.tag in clean]
    _clean(check_arrays(ok, "host", {"labels": y, "g": g}), check_values(ok, "host", {"g": g, "X": X}),
           check_rows(ok, "host", {"packed": packed}), check_float_lengths(ok, "host", [64]),
           check_residues(ok, "host", [n]), check_key_material(ok, pats), check_ckks_contexts(ok)[0])


# ============================================================================ SecureBoost


@pytest.mark.parametrize("he", ["paillier", "ou"])
def test_secureboost_training_and_prediction(monkeypatch, he):
    """Two passive parties, subsampling and early stopping (validation rows are routed
    through passive splits), then a prediction on new rows."""
    from hefl.models.secureboost import (
        ActiveParty,
        BoostParams,
        PassiveParty,
        estimator,
        predict_active,
        predict_passive,
    )

    X, y = _synthetic(300, 9, seed=3)
    Xp, _ = _synthetic(60, 9, seed=4)
    cols = {"guest": slice(0, 3), "host": slice(3, 6), "host2": slice(6, 9)}
    passives = ["host", "host2"]
    params = BoostParams(n_estimators=3, max_depth=3, subsample=0.8, early_stopping_rounds=2,
                         max_bin=16, random_state=0)
    objects: dict[str, PassiveParty] = {}

    def active(ctx):
        kit = estimator.make_kit(he, 1024, "cpu", 1, True)
        return ActiveParty(ctx, X[:, cols["guest"]], y, params, kit, passives).fit()

    def passive(name):
        def serve(ctx):
            objects[name] = PassiveParty(ctx, X[:, cols[name]], "guest", allow_insecure=True, backend="cpu")
            return objects[name].serve()
        return serve

    with Recorder() as rec:
        instrument_secureboost(rec, monkeypatch)
        res = run_threads({"guest": active, **{p: passive(p) for p in passives}}, timeout=300)
        pred = run_threads({"guest": lambda ctx: predict_active(ctx, res["guest"], Xp[:, cols["guest"]]),
                            **{p: (lambda ctx, p=p: predict_passive(ctx, res[p], Xp[:, cols[p]], "guest"))
                               for p in passives}}, timeout=120)
    assert pred["guest"].shape == (60, 1)
    assert rec.parties == {"guest", *passives}

    # what the active party knew: labels and [g | h] of every round, quantised and packed
    gh = rec.kept("gh", "guest")
    quant = rec.kept("gh_quantised", "guest")
    packed = rec.kept("gh_packed", "guest")
    assert len(gh) >= len(res["guest"]["trees"]) and quant and packed
    grads = {"g": [a[:, 0] for a in gh] + [q[:, 0] for q in quant],
             "h": [a[:, 1] for a in gh] + [q[:, 1] for q in quant],
             "g/h fixed point": [q[:, j] * 2.0**params.gh_frac_bits for q in quant for j in (0, 1)]}
    for p in passives:
        got = rec.received_by(p)
        assert any(isinstance(leaf, Opaque) for m in got for leaf in _flat(m.view))
        sets = row_sets(rec, p, len(y))
        assert sets, "the tree rows travel as row indices (allowed)"
        labels = {"labels": [y] + [y[r] for r in sets]}
        _clean(check_arrays(rec, p, {**labels, **grads}),
               check_values(rec, p, grads),
               check_rows(rec, p, {"packed g/h plaintexts": packed}),
               check_no_plain_floats(rec, p))  # passives get ciphertexts, ids, masks only

    # what the passive parties knew: their columns (training and prediction rows), their
    # bin codes, their split thresholds
    for p in passives:
        thr = [s["threshold"] for s in res[p]["splits"]]
        assert thr, f"{p} made no split: nothing to check"
        train, new = X[:, cols[p]], Xp[:, cols[p]]
        columns = [c for j in range(3) for c in (train[:, j], new[:, j], np.r_[train[:, j], new[:, j]])]
        secrets = {f"{p} features": columns, f"{p} thresholds": np.asarray(thr, dtype=float)}
        codes = {f"{p} bin codes": [objects[p].bins[:, j] for j in range(3)]}
        for receiver in ["guest", *[q for q in passives if q != p]]:
            _clean(check_values(rec, receiver, secrets), check_arrays(rec, receiver, {**secrets, **codes}))
    _clean(check_no_plain_floats(rec, "guest"))  # masks, split ids, counts, decision bits only
    # the active party's copy of the trees holds no passive threshold either
    for t in res["guest"]["trees"]:
        for b, thr in zip(t["block"], t["threshold"]):
            if b != 0:
                assert thr in ("nan", None) or (isinstance(thr, float) and np.isnan(thr))

    material = rec.kept("key_material", "guest")
    assert material and material[0]["scheme"] == he
    _clean(check_key_material(rec, key_patterns(material[0])))


def _flat(view):
    return [leaf for _, leaf in leaves(view)]


# ============================================================================ hetero LR


def _lr_run(monkeypatch, he, protocol, n_parties):
    from hefl.models.hetero_lr import ActiveParty, Arbiter, LRConfig, PassiveParty

    X, y = _breast(128)
    names = ["guest", "host", "host2"][:n_parties]
    blocks = dict(zip(names, (X[:, c] for c in np.array_split(np.arange(X.shape[1]), n_parties))))
    cfg = LRConfig(he=he, protocol=protocol, key_size=1024, allow_insecure=True, backend="cpu", n_jobs=1,
                   max_iter=2, batch_size=48, tol=None, active="guest", passives=tuple(names[1:]),
                   arbiter="arbiter" if protocol == "arbiter" else None).validate()
    roles = {"guest": lambda ctx: ActiveParty(blocks["guest"], y, cfg, seed=7).run(ctx)}
    for name in names[1:]:
        roles[name] = lambda ctx, name=name: PassiveParty(blocks[name], cfg).run(ctx)
    if cfg.arbiter:
        roles["arbiter"] = lambda ctx: Arbiter(cfg).run(ctx)
    rec = Recorder()
    with rec:
        instrument_hetero_lr(rec, monkeypatch)
        results = run_threads(roles, timeout=300)
    return cfg, names, blocks, y, rec, results


def _uniform(row, n):
    r = int.from_bytes(np.ascontiguousarray(row, dtype="<u8").tobytes(), "little") / n
    return 1e-9 < r < 1 - 1e-9


@pytest.mark.parametrize("he,protocol,n_parties", [
    ("paillier", "two_party", 3), ("paillier", "arbiter", 3), ("ckks", "two_party", 2), ("ckks", "arbiter", 2),
])
def test_hetero_lr_training(monkeypatch, he, protocol, n_parties):
    from hefl.models.hetero_lr import plain_fit

    cfg, names, blocks, y, rec, results = _lr_run(monkeypatch, he, protocol, n_parties)
    passives = names[1:]
    # the run itself is right (so the recorded secrets are the real ones)
    ref = plain_fit([blocks[n] for n in names], y, cfg, 7)
    for k, name in enumerate(names):
        np.testing.assert_allclose(results[name]["coef"][0], ref["coef"][k], atol=1e-3)

    secrets = lr_secrets(rec, "guest", passives)
    n_batches = sum(len(e) for e in rec.kept("batches", "guest"))
    assert len(secrets["guest"]["labels"]) == n_batches == len(secrets[passives[0]]["weights"]) > 1
    lengths = {len(y)} | {b.size for e in rec.kept("batches", "guest") for b in e}
    kits = {p: k[0] for p, k in rec.kept_by("kit").items()}
    receivers = names + (["arbiter"] if cfg.arbiter else [])
    assert set(kits) == ({"arbiter"} if cfg.arbiter else set(names))
    assert rec.parties == set(receivers)
    opened = own_ciphertexts = 0
    for receiver in receivers:
        assert rec.received_by(receiver), f"{receiver} received nothing"
        # nobody receives another party's features, weights, gradients or scores; only the
        # active party may know labels and residual terms, and nobody the residual d
        mine = {}
        for owner, sec in secrets.items():
            for what, vals in sec.items():
                if owner != receiver or what == "residuals":
                    mine[f"{owner} {what}"] = vals
        labels = {k: v for k, v in mine.items() if k.endswith("labels")}
        values = {k: v for k, v in mine.items() if not k.endswith("labels")}
        _clean(check_values(rec, receiver, values),
               check_arrays(rec, receiver, {**values, **labels}),
               check_float_lengths(rec, receiver, lengths))
        if he == "paillier":
            # opened values (gd, qd) and loss masks are uniform residues: masked, never encoded plaintexts
            _clean(check_residues(rec, receiver, [k.n for k in kits.values()]))
        else:
            for m in rec.received_by(receiver):
                if m.tag.endswith(("/gd", "/qd")):
                    opened += 1
                    assert np.all(np.abs(m.view) > 1.0), f"{receiver}: unmasked CKKS value under {m.tag}"
        # ciphertexts under the receiver's own key open to masked values only (two-party:
        # the active party legitimately opens the passive parties' loss pieces, last entry)
        own = kits.get(receiver)
        for m in rec.received_by(receiver) if own is not None else []:
            assert m.consumed
            for leaf in _flat(m.obj):
                if not (isinstance(leaf, (CipherArray, CKKSArray)) and own.same_key(leaf.kit)):
                    continue
                n_masked = blocks[m.sender].shape[1] + (m.sender == "guest") + 1
                if cfg.arbiter is None and receiver == "guest":
                    n_masked -= 1
                own_ciphertexts += 1
                if he == "paillier":
                    assert all(_uniform(r, own.n) for r in own.decrypt_raw(leaf)[:n_masked]), f"{receiver}: {m.tag}"
                else:
                    assert np.all(np.abs(own.decrypt(leaf)[:n_masked]) > 1.0), f"{receiver}: {m.tag}"
    assert own_ciphertexts and (opened or he == "paillier")  # the checks above saw something
    # no secret key anywhere; CKKS contexts travel without theirs
    patterns = {f"{p} {k}": v for p, ms in rec.kept_by("key_material").items()
                for k, v in key_patterns(ms[0]).items()}
    assert patterns
    _clean(check_key_material(rec, patterns))
    findings, seen = check_ckks_contexts(rec)
    _clean(findings)
    assert seen == (2 if he == "ckks" else 0)  # the public contexts that travelled, each checked


# ============================================================================ job runner


def _job(tmp_path: Path, model: str) -> Path:
    params = {"n_estimators": 3, "max_depth": 2} if model == "secureboost" else {"max_iter": 2, "batch_size": 128}
    doc = {
        "name": "leaks", "seed": 3,
        "parties": {
            "guest": {"role": "active", "data": {"path": str(DATA / "breast_hetero_guest.csv"),
                                                 "id_column": "id", "label_column": "y"}},
            "host": {"role": "passive", "data": {"path": str(DATA / "breast_hetero_host.csv"),
                                                 "id_column": "id"}},
        },
        "he": {"scheme": "paillier", "key_size": 1024, "allow_insecure": True, "backend": "cpu", "n_jobs": 1},
        "steps": [
            {"psi": {}},
            {"train": {"model": model, "params": params}},
            {"evaluate": {"test_size": 0.25}},
            {"predict": {"data": {"guest": {"path": str(DATA / "breast_hetero_guest.csv"), "label_column": "y"},
                                  "host": {"path": str(DATA / "breast_hetero_host.csv")}}}},
        ],
        "output": str(tmp_path / "out"),
        "timeouts": {"recv": 60, "connect": 30, "job": 240, "heartbeat": 5},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("model", ["secureboost", "hetero_lr"])
def test_job_runner_end_to_end(tmp_path, monkeypatch, model):
    """``run_job``: PSI, train, evaluate, predict, each party in its own process over
    ZeroMQ; the party processes record what they receive into a spool."""
    from hefl.jobs import load_job, run_job

    job = load_job(_job(tmp_path, model))
    with Recorder(tmp_path / "spool") as rec:
        (instrument_secureboost if model == "secureboost" else instrument_hetero_lr)(rec, monkeypatch)
        instrument_psi(rec, monkeypatch)
        res = run_job(job, progress=False)
    assert res.parties["guest"]["rows"] == 569
    assert rec.parties == {"guest", "host"}
    steps = {m.tag.split("/")[0] for m in rec.messages if m.kind == "msg"}
    assert {"psi", "split", "train", "evaluate-test", "evaluate-train", "psi-predict", "predict"} <= steps
    host_csv = pd.read_csv(DATA / "breast_hetero_host.csv").drop(columns=["id"]).to_numpy(dtype=float)
    host_features = {"host features": [host_csv[:, j] for j in range(host_csv.shape[1])]}
    material = rec.kept("key_material")
    schemes = sorted(m["scheme"] for m in material)
    # the HE key(s): the active party's (SecureBoost) or each data party's (two-party LR);
    # the PSI scalars: each party, for the training and the prediction PSI
    assert schemes == ["paillier"] * (1 if model == "secureboost" else 2) + ["psi"] * 4, schemes
    patterns = {f"{k} of key {i}": v for i, m in enumerate(material) for k, v in key_patterns(m).items()}
    _clean(check_key_material(rec, patterns))
    if model == "secureboost":
        gh, packed, labels = rec.kept("gh", "guest"), rec.kept("gh_packed", "guest"), rec.kept("labels", "guest")
        assert gh and packed and labels
        y = labels[0]
        sets = row_sets(rec, "host", len(y))
        grads = {"g": [a[:, 0] for a in gh], "h": [a[:, 1] for a in gh]}
        _clean(check_arrays(rec, "host", {"labels": [y] + [y[r] for r in sets], **grads}),
               check_values(rec, "host", grads), check_rows(rec, "host", {"packed g/h": packed}),
               check_no_plain_floats(rec, "host"))
        import json

        model_h = json.loads((job.output / "host" / "model.json").read_text())
        thr = [float(s["threshold"]) for s in model_h["splits"]
               if isinstance(s["threshold"], (int, float))]
        assert thr
        secrets = {**host_features, "host thresholds": thr}
        _clean(check_values(rec, "guest", secrets), check_arrays(rec, "guest", secrets),
               check_no_plain_floats(rec, "guest"))
    else:
        secrets = lr_secrets(rec, "guest", ["host"])
        assert secrets["guest"]["labels"] and secrets["host"]["weights"]
        lengths = {569} | {b.size for e in rec.kept("batches", "guest") for b in e}
        g, h = secrets["guest"], secrets["host"]
        to_host = {f"guest {k}": v for k, v in g.items() if k != "labels"} | {"host residuals": g["residuals"]}
        _clean(check_values(rec, "host", to_host), check_arrays(rec, "host", {**to_host, "labels": g["labels"]}),
               check_float_lengths(rec, "host", lengths), check_no_plain_floats(rec, "host"))
        # the active party: training reveals nothing of the host; prediction sends the host's
        # partial scores X_k w_k of the predicted rows (documented in hefl/jobs/_lr.py)
        to_guest = {**{f"host {k}": v for k, v in h.items()}, **host_features, "residuals": g["residuals"]}
        _clean(check_values(rec, "guest", to_guest), check_arrays(rec, "guest", to_guest),
               check_float_lengths(rec, "guest", lengths, allow=("/scores",)),
               check_no_plain_floats(rec, "guest", allow=("/scores",)))
        scores = [m for m in rec.received_by("guest") if m.tag.endswith("/scores")]
        assert scores, "prediction sends partial scores: the whitelist is not vacuous"
