"""SecureBoost benchmark: the SecretFlow-comparable workload, with plaintext XGBoost in the same run.

make_classification(n_samples=20000, n_features=20, random_state=0), features 10/10 between
two parties (two processes over loopback ZeroMQ), 10 trees, depth 5, 32 bins, learning
rate 0.3, Paillier-2048 on the CPU.  Reference figures on an idle 2-core machine like this
one: SecretFlow 1.14 SGB 254 s (Paillier) / 38 s (OU), train AUC 0.9615; FATE 2.2 1,436 s.

Usage::

    python benchmarks/secureboost_bench.py [--rows 20000] [--he paillier|ou|mock] [--backend cpu]
    hefl bench secureboost [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

SECRETFLOW = {20000: {"paillier": 254.0, "ou": 38.0}, 100000: {"paillier": 564.0, "ou": 88.0}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--he", default="paillier", choices=["paillier", "ou", "mock"])
    ap.add_argument("--backend", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--key-size", type=int, default=2048)
    ap.add_argument("--transport", default="processes", choices=["processes", "threads"],
                    help="parties as processes over loopback ZeroMQ (default) or threads in one process")
    ap.add_argument("--compress-slots", default="auto",
                    help="values per compressed histogram ciphertext: auto (the key owner's "
                         "kit decides), max, or a number (sets HEFL_SB_COMPRESS_SLOTS)")
    ap.add_argument("--out", help="also write the JSON record to this file")
    args = ap.parse_args(argv)

    from sklearn.datasets import make_classification
    from sklearn.metrics import roc_auc_score

    from hefl.models.secureboost import SecureBoostClassifier

    if args.compress_slots != "auto":
        os.environ["HEFL_SB_COMPRESS_SLOTS"] = args.compress_slots

    X, y = make_classification(n_samples=args.rows, n_features=20, random_state=0)
    params = dict(n_estimators=args.trees, max_depth=5, learning_rate=0.3, max_bin=32)

    try:
        import xgboost as xgb
    except ImportError:  # e.g. on a GPU machine without it: the hefl figures still count
        xgb = None
    xgb_s = xgb_auc = float("nan")
    if xgb is not None:
        t = time.perf_counter()
        ref = xgb.XGBClassifier(**params, tree_method="hist", n_jobs=os.cpu_count()).fit(X, y)
        xgb_s = time.perf_counter() - t
        xgb_auc = roc_auc_score(y, ref.predict_proba(X)[:, 1])

    clf = SecureBoostClassifier(**params, he=args.he, key_size=args.key_size, backend=args.backend,
                                parties={"alice": list(range(10)), "bob": list(range(10, 20))}, random_state=0,
                                transport=args.transport, allow_insecure=args.key_size < 2048)
    t = time.perf_counter()
    clf.fit(X, y)
    wall = time.perf_counter() - t
    auc = roc_auc_score(y, clf.predict_proba(X)[:, 1])

    # SecretFlow's figures are for its own workload only: 10 trees, 2048-bit keys
    sf = SECRETFLOW.get(args.rows, {}).get(args.he) if args.trees == 10 and args.key_size == 2048 else None
    record = {
        "benchmark": "secureboost", "rows": args.rows, "features": 20, "trees": args.trees, "depth": 5,
        "bins": 32, "he": args.he, "transport": args.transport, "key_size": args.key_size, "backend": args.backend,
        "compress_slots": args.compress_slots, "wall_s": wall, "train_auc": auc, "xgboost_s": None if xgb is None else xgb_s,
        "xgboost_train_auc": None if xgb is None else xgb_auc,
        "secretflow_s": sf, "speedup_vs_secretflow": (sf / wall) if sf else None,
        "phases_s": clf.timings_,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    print(f"\nSecureBoost {args.rows:,} x 20, {args.trees} trees depth 5, {args.he}-{args.key_size} "
          f"({args.backend}, compression {args.compress_slots})")
    print(f"{'':<22}{'seconds':>10}{'train AUC':>12}")
    print(f"{'hefl':<22}{wall:>10.1f}{auc:>12.4f}")
    print(f"{'xgboost (plaintext)':<22}{xgb_s:>10.2f}{xgb_auc:>12.4f}")
    if sf:
        print(f"{'SecretFlow 1.14 (ref)':<22}{sf:>10.1f}{'0.9615' if args.rows == 20000 else '-':>12}"
              f"   -> hefl x{sf / wall:.1f}")
    for party, ph in clf.timings_.items():
        print(f"  {party}: " + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(ph.items())))
    line = json.dumps(record, sort_keys=True)
    print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(line + "\n")
    return record


if __name__ == "__main__":
    main()
