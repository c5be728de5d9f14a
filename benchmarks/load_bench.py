"""Load benchmark: SecureBoost on 200,000 x 40 and PSI on 2,000,000 IDs, peak memory per party.

Two parties, each its own OS process over loopback ZeroMQ (``hefl.federation.run_local``),
as in a deployment:

* **SecureBoost**: ``make_classification(200000, 40, n_informative=10, random_state=0)``,
  features 20 (active, with the label) / 20 (passive), 10 trees, depth 5, 32 bins,
  learning rate 0.3, Paillier-2048 on the CPU.  Each party generates the table inside its
  own process and keeps only its columns; after training the active party predicts the
  training rows (with the passive party's split decisions) for the train AUC.  Baseline in
  the same run: plaintext XGBoost (``hist``) on the same data and parameters.  Target:
  peak memory <= 4 GB per party.
* **PSI**: ``hefl.psi.intersect`` on 2,000,000 IDs per party, 80 % overlap -- the parties
  and the raw X25519 rate (the efficiency baseline) are ``psi_bench.run_size``'s.
  Target: peak memory <= 2 GB per party.

Memory is the party process's resident peak: ``ru_maxrss`` (lifetime, SecureBoost) and
``VmHWM`` (reset by ``/proc/self/clear_refs`` at the start of a phase).  A forked process
starts with the parent's resident pages mapped, so the peaks include them (conservative);
the parent's RSS at fork time and each party's RSS at its start are reported beside them.
MB = 2^20 bytes; GB in the targets = 10^9 bytes (4 GB = 3,815 MB, 2 GB = 1,907 MB).

Usage::

    python benchmarks/load_bench.py                      # the full load, writes results/load_bench.json
    python benchmarks/load_bench.py --rows 3000 --trees 2 --depth 3 --psi-ids 20000 --he mock
    hefl bench load [--skip-psi] [--skip-train]

Prints a table and, last, one JSON line (machine, versions, parameters, figures).  Returns
0 when every target is met and the PSI result is correct.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent)):  # psi_bench, and hefl from the checkout (also under runpy)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from psi_bench import _machine, _peak_rss_bytes, _peak_rss_reset, _table, run_size

__all__ = ["main"]

FULL = {"rows": 200_000, "features": 40, "trees": 10, "depth": 5, "psi_ids": 2_000_000}
TARGET_TRAIN_BYTES = 4 * 10**9
TARGET_PSI_BYTES = 2 * 10**9
LEARNING_RATE, MAX_BIN = 0.3, 32
ACTIVE, PASSIVE = "alice", "bob"
RESULT = HERE / "results" / "load_bench.json"
MB = 2**20


def _rss_bytes() -> int:
    """This process's current resident set (VmRSS), 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _maxrss_bytes() -> int:
    """Lifetime peak RSS of this process (``ru_maxrss``, KiB on Linux); not reset by clear_refs."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _make_data(rows: int, features: int):
    from sklearn.datasets import make_classification

    return make_classification(n_samples=rows, n_features=features, n_informative=max(2, features // 4),
                               random_state=0)


# ----------------------------------------------------------------------------- SecureBoost
def _sb_party(role: str, args: argparse.Namespace) -> Any:
    def fn(ctx: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"role": role, "rss_start_bytes": _rss_bytes()}  # before this party's imports

        import numpy as np

        from hefl.models.secureboost._federated import (
            ActiveParty,
            BoostParams,
            PassiveParty,
            predict_active,
            predict_passive,
        )
        from hefl.models.secureboost.estimator import make_kit

        c0 = time.process_time()
        t = time.perf_counter()
        X, y = _make_data(args.rows, args.features)
        n_active = args.features // 2
        X = np.ascontiguousarray(X[:, :n_active] if role == "active" else X[:, n_active:], dtype=np.float64)
        if role != "active":
            y = None
        out["datagen_s"] = time.perf_counter() - t
        out["data_peak_bytes"] = _peak_rss_bytes()
        _peak_rss_reset()  # from here VmHWM counts training only (plus the data and inherited pages)
        out["rss_after_data_bytes"] = _rss_bytes()
        insecure = args.he == "mock" or args.key_size < 2048
        if role == "active":
            t = time.perf_counter()
            kit = make_kit(args.he, args.key_size, args.backend, args.n_jobs, insecure)
            out["keygen_s"] = time.perf_counter() - t
            params = BoostParams(n_estimators=args.trees, max_depth=args.depth, learning_rate=LEARNING_RATE,
                                 max_bin=MAX_BIN, random_state=0)
            t = time.perf_counter()
            model = ActiveParty(ctx, X, y, params, kit, [PASSIVE], n_jobs=args.n_jobs).fit()
            out["fit_s"] = time.perf_counter() - t
        else:
            t = time.perf_counter()
            model = PassiveParty(ctx, X, ACTIVE, n_jobs=args.n_jobs, allow_insecure=insecure,
                                 backend=args.backend).serve()
            out["fit_s"] = time.perf_counter() - t
        out["train_peak_bytes"] = _peak_rss_bytes()
        out["timings"] = model.get("timings", {})
        t = time.perf_counter()
        if role == "active":
            from sklearn.metrics import roc_auc_score

            margin = predict_active(ctx, model, X)
            out["train_auc"] = float(roc_auc_score(y, margin[:, 0]))
            out["n_trees"] = len(model["trees"])
        else:
            predict_passive(ctx, model, X, ACTIVE)
        out["predict_s"] = time.perf_counter() - t
        out["cpu_s"] = time.process_time() - c0
        out["maxrss_bytes"] = _maxrss_bytes()
        return out

    return fn


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """SecureBoost with each party in its own process, then plaintext XGBoost in this one."""
    from hefl.federation import run_local

    parent_rss = _rss_bytes()
    t = time.perf_counter()
    res = run_local({ACTIVE: _sb_party("active", args), PASSIVE: _sb_party("passive", args)},
                    timeout=24 * 3600.0, recv_timeout=3600.0)
    wall = time.perf_counter() - t
    print(f"[load_bench] SecureBoost: {wall:.1f} s", file=sys.stderr, flush=True)

    # the baseline runs after the forks, so its memory is not inherited by the parties
    xgb_s = xgb_auc = xgb_peak = None
    try:
        import xgboost as xgb
    except ImportError:  # e.g. on a machine without it: the hefl figures still count
        xgb = None
    if xgb is not None:
        from sklearn.metrics import roc_auc_score

        _peak_rss_reset()
        X, y = _make_data(args.rows, args.features)
        t = time.perf_counter()
        ref = xgb.XGBClassifier(n_estimators=args.trees, max_depth=args.depth, learning_rate=LEARNING_RATE,
                                max_bin=MAX_BIN, tree_method="hist", n_jobs=os.cpu_count()).fit(X, y)
        xgb_s = time.perf_counter() - t
        xgb_auc = float(roc_auc_score(y, ref.predict_proba(X)[:, 1]))
        xgb_peak = _peak_rss_bytes()
        del X, y, ref
    parties = {}
    for name in (ACTIVE, PASSIVE):
        r = dict(res[name])
        r["peak_bytes"] = max(r["maxrss_bytes"], r["train_peak_bytes"])
        r["target_bytes"] = TARGET_TRAIN_BYTES
        r["pass"] = r["peak_bytes"] <= TARGET_TRAIN_BYTES
        parties[name] = r
    fit_s = parties[ACTIVE]["fit_s"]
    return {
        "rows": args.rows, "features": args.features,
        "features_per_party": {ACTIVE: args.features // 2, PASSIVE: args.features - args.features // 2},
        "trees": args.trees, "depth": args.depth, "bins": MAX_BIN, "learning_rate": LEARNING_RATE,
        "he": args.he, "key_size": args.key_size, "backend": args.backend, "n_jobs": args.n_jobs,
        "wall_s": wall, "fit_s": fit_s, "train_auc": parties[ACTIVE]["train_auc"],
        "xgboost_s": xgb_s, "xgboost_train_auc": xgb_auc, "xgboost_peak_rss_bytes": xgb_peak,
        "slowdown_vs_xgboost": (fit_s / xgb_s) if xgb_s else None,
        "parent_rss_at_fork_bytes": parent_rss, "parties": parties,
        "pass": all(p["pass"] for p in parties.values()),
    }


def _train_table(r: dict[str, Any]) -> str:
    nan = float("nan")
    lines = [
        (f"SecureBoost {r['rows']:,} x {r['features']} ({r['features_per_party'][ACTIVE]} active / "
         f"{r['features_per_party'][PASSIVE]} passive), {r['trees']} trees depth {r['depth']}, {r['bins']} bins, "
         f"{r['he']}-{r['key_size']} ({r['backend']}), n_jobs={r['n_jobs']}"),
        f"{'':<22}{'seconds':>10}{'train AUC':>12}",
        (f"{'hefl (fit)':<22}{r['fit_s']:>10.1f}{r['train_auc']:>12.4f}"
         f"   (whole run incl. fork, data, keygen, predict: {r['wall_s']:.1f} s)"),
        f"{'xgboost (plaintext)':<22}{r['xgboost_s'] or nan:>10.2f}{r['xgboost_train_auc'] or nan:>12.4f}"
        + (f"   -> hefl x{r['slowdown_vs_xgboost']:.1f} slower" if (r["slowdown_vs_xgboost"] or 0) >= 1
           else f"   -> hefl x{1 / r['slowdown_vs_xgboost']:.1f} faster" if r["slowdown_vs_xgboost"] else ""),
    ]
    for name, p in r["parties"].items():
        extra = f", keygen {p['keygen_s']:.1f}s" if "keygen_s" in p else ""
        lines.append(f"  {name} ({p['role']}): data {p['datagen_s']:.1f}s{extra}, fit {p['fit_s']:.1f}s, "
                     f"predict {p['predict_s']:.1f}s, cpu {p['cpu_s']:.1f}s | "
                     + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(p["timings"].items())))
    lines.append(f"memory per party (MB; parent RSS at fork {r['parent_rss_at_fork_bytes'] / MB:.0f} MB"
                 + (f"; xgboost peak in the parent {r['xgboost_peak_rss_bytes'] / MB:.0f} MB"
                    if r["xgboost_peak_rss_bytes"] else "") + ")")
    head = (f"  {'party':<7}{'role':<9}{'at start':>9}{'data peak':>10}{'after data':>11}{'train peak':>11}"
            f"{'peak':>8}{'target':>8}{'ok':>4}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    for name, p in r["parties"].items():
        lines.append(f"  {name:<7}{p['role']:<9}{p['rss_start_bytes'] / MB:>9.0f}{p['data_peak_bytes'] / MB:>10.0f}"
                     f"{p['rss_after_data_bytes'] / MB:>11.0f}{p['train_peak_bytes'] / MB:>11.0f}"
                     f"{p['peak_bytes'] / MB:>8.0f}{p['target_bytes'] / MB:>8.0f}{'y' if p['pass'] else 'N':>4}")
    lines.append("  at start: RSS inherited from the parent at fork; data peak: VmHWM while generating the whole\n"
                 "  table (a benchmark artefact); train peak: VmHWM from after the data to the end of fit;\n"
                 "  peak (judged against the target): max(ru_maxrss over the process's life, train peak)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- PSI
def run_psi(args: argparse.Namespace) -> dict[str, Any]:
    """``psi_bench.run_size``: IDs generated inside each party process, then the raw X25519 rate."""
    kwargs = {"n_jobs": args.n_jobs or 1, "batch_size": args.batch_size}
    parent_rss = _rss_bytes()
    r = run_size(args.psi_ids, args.overlap, kwargs, args.raw_ops)
    print(f"[load_bench] PSI N={args.psi_ids}: {r['wall_s']:.1f} s, efficiency {r['efficiency']:.2f}",
          file=sys.stderr, flush=True)
    r.update(n_jobs=kwargs["n_jobs"], batch_size=args.batch_size, parent_rss_at_fork_bytes=parent_rss,
             target_bytes=TARGET_PSI_BYTES)
    r["pass_memory"] = {k: v <= TARGET_PSI_BYTES for k, v in r["peak_rss_bytes"].items()}
    r["pass"] = bool(r["correct"]) and all(r["pass_memory"].values())
    return r


def _psi_table(r: dict[str, Any]) -> str:
    lines = [(f"PSI {r['n_per_party']:,} IDs per party, {r['overlap']:.0%} overlap, ECDH X25519, "
              f"n_jobs={r['n_jobs']} per party, batch {r['batch_size']} (columns as psi_bench)"),
             _table([r]),
             (f"memory per party (MB; VmHWM from the party's start, incl. the parent's "
              f"{r['parent_rss_at_fork_bytes'] / MB:.0f} MB at fork)"),
             f"  {'party':<7}{'peak':>8}{'target':>8}{'ok':>4}"]
    for name, b in r["peak_rss_bytes"].items():
        ok = "y" if r["pass_memory"][name] else "N"
        lines.append(f"  {name:<7}{b / MB:>8.0f}{r['target_bytes'] / MB:>8.0f}{ok:>4}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def _versions() -> dict[str, Any]:
    out = _machine()
    for mod in ("sklearn", "xgboost", "zmq"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and one JSON line. Returns 0 if every target is met."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=FULL["rows"])
    p.add_argument("--features", type=int, default=FULL["features"], help="split half active / half passive")
    p.add_argument("--trees", type=int, default=FULL["trees"])
    p.add_argument("--depth", type=int, default=FULL["depth"])
    p.add_argument("--he", default="paillier", choices=["paillier", "ou", "mock"],
                   help="mock: plaintext 'ciphertexts', for smoke runs only")
    p.add_argument("--key-size", type=int, default=2048)
    p.add_argument("--backend", default="cpu", choices=["cpu", "gpu", "auto"])
    p.add_argument("--psi-ids", type=int, default=FULL["psi_ids"], help="IDs per party")
    p.add_argument("--overlap", type=float, default=0.8)
    p.add_argument("--batch-size", type=int, default=4096, help="PSI batch")
    p.add_argument("--raw-ops", type=int, default=20000, help="X25519 ops per raw-rate sample")
    p.add_argument("--n-jobs", type=int, default=None,
                   help="threads per party (default: SecureBoost's own default; PSI 1, as psi_bench)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-psi", action="store_true")
    p.add_argument("--out", default=None,
                   help=f"write the JSON record here (default: {RESULT.relative_to(HERE.parent)} at full size only)")
    args = p.parse_args(argv)
    if args.features < 2:
        p.error("--features must be at least 2 (one per party)")

    # PSI first: the parent is at its leanest, so the parties inherit the least
    psi = None if args.skip_psi else run_psi(args)
    train = None if args.skip_train else run_train(args)

    print(f"\nhefl load benchmark: 2 parties as processes (loopback ZeroMQ) on {os.cpu_count()} cores; "
          "MB = 2^20 bytes, targets 4 GB / 2 GB = 10^9 bytes")
    if train:
        print(_train_table(train))
    if psi:
        print(_psi_table(psi))
    full = (not args.skip_train and not args.skip_psi and args.he == "paillier" and args.key_size == 2048
            and all(getattr(args, k) == v for k, v in FULL.items()))
    ok = all(part["pass"] for part in (train, psi) if part)
    record = {"bench": "load", "machine": _versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "full_size": full, "params": vars(args),
              "targets_bytes": {"secureboost_per_party": TARGET_TRAIN_BYTES, "psi_per_party": TARGET_PSI_BYTES},
              "secureboost": train, "psi": psi, "pass": ok}
    line = json.dumps(record, sort_keys=True)
    out = args.out or (str(RESULT) if full else None)
    if out:
        from hefl._atomic import atomic_write_text

        atomic_write_text(out, line + "\n")
    print(("ALL TARGETS MET" if ok else "TARGET MISSED") + (f"; record written to {out}" if out else ""))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
