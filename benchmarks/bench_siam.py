"""SIAM on synthetic scenicness: train from scratch, print the acceptance numbers and wall time.

Draws the scenes (``cnnlens.datasets.scenic``), computes the frozen EfficientNet-Lite0
trunk features once, trains the SIAM head (attribute presence + score) and grades it
on the test split: task R^2, attribute-presence AUC, the attribute pointing game, the
signs of the recovered coefficients and their Spearman correlation with the true
ones. Every number is checked against the acceptance threshold; the exit status is
1 when one misses.

    OMP_NUM_THREADS=2 python benchmarks/bench_siam.py            # default run (~1.5 min)
    python benchmarks/bench_siam.py --variants                    # + templates, interactions
    python benchmarks/bench_siam.py --json runs/siam.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

THRESHOLDS = {"r2": 0.9, "auc": 0.95, "pointing": 0.9, "spearman": 0.8}


def _run(cl, label: str, args, **config) -> dict:
    from cnnlens.datasets.scenic import ATTRIBUTES
    from cnnlens.siam import SiamConfig, TrainSettings, fit_scenic

    start = time.perf_counter()
    cfg = SiamConfig(attributes=list(ATTRIBUTES), size=args.size, **config)
    run = fit_scenic(
        args.train, args.test, config=cfg, settings=TrainSettings(epochs=args.epochs, seed=0)
    )
    wall = time.perf_counter() - start
    s = run.scores
    checks = {
        "r2": s.r2 >= THRESHOLDS["r2"],
        "auc": s.auc >= THRESHOLDS["auc"],
        "pointing": s.pointing >= THRESHOLDS["pointing"],
        "signs": s.signs_recovered,
        "spearman": s.spearman >= THRESHOLDS["spearman"],
    }
    print(f"\n== {label}: {args.train} train / {args.test} test scenes at {args.size} px")
    for line in s.lines():
        print("  " + line)
    weights = ", ".join(
        f"{k} {v:+.2f} ({s.true_coefficients[k]:+.2f})" for k, v in s.weights.items()
    )
    print(f"  weights (true): {weights}")
    times = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
    print(f"  wall time {wall:.1f} s ({times})")
    print("  acceptance: " + ("PASS" if all(checks.values()) else f"FAIL {checks}"))
    return {"label": label, "scores": s.to_dict(), "seconds": run.seconds, "wall": wall, **checks}


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=0, repeats=1)
    parser.add_argument("--train", type=int, default=1500, help="training scenes (1500)")
    parser.add_argument("--test", type=int, default=500, help="test scenes (500)")
    parser.add_argument("--size", type=int, default=160, help="image side (160)")
    parser.add_argument("--epochs", type=int, default=100, help="head epochs (100)")
    parser.add_argument("--variants", action="store_true", help="also templates, interactions")
    args = parser.parse_args()
    cl = common.import_cnnlens()
    info = common.machine_info()
    common.print_machine(info)
    results = [_run(cl, "default (GAP)", args)]
    if args.variants:
        results.append(
            _run(cl, "templates (2 per attribute, 4x4)", args, pooling="templates", templates=2)
        )
        results.append(_run(cl, "GAP + pairwise interactions", args, interactions=True))
    if args.json:
        common.write_json(args.json, {"machine": info, "results": results})
    ok = all(r[k] for r in results[:1] for k in ("r2", "auc", "pointing", "signs", "spearman"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
