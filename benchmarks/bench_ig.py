"""Integrated gradients speed: cnnlens vs Captum ``IntegratedGradients``.

    python benchmarks/bench_ig.py [--steps 32] [--repeats 5] [--warmup 1] [--json out.json]

Bundled EfficientNet-Lite0, one 224x224 image, class 285, zero baseline,
midpoint rule, the same number of steps. Captum runs with its best
``internal_batch_size`` from a small sweep; both are interleaved (see
``common.py``) and the script prints the maps' largest difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=5)
    parser.add_argument("--steps", type=int, default=32, help="integration steps (default 32)")
    args = parser.parse_args(argv)

    import torch
    from captum.attr import IntegratedGradients

    cl, model, x = common.load_setup(args.image)
    net = model.net.eval()
    info = common.machine_info()
    common.print_machine(info)
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, steps {args.steps}")
    last: dict[str, torch.Tensor] = {}

    def ours():
        e = cl.attribute(model, x, "integrated_gradients", target=TARGET, steps=args.steps)
        last["cnnlens"] = e.maps[:, 0]

    def theirs(batch: int):
        def fn():
            ig = IntegratedGradients(net)
            a = ig.attribute(
                x,
                baselines=0,
                target=TARGET,
                n_steps=args.steps,
                method="riemann_middle",
                internal_batch_size=batch,
            )
            last["captum"] = a.sum(1).detach()
            net.zero_grad(set_to_none=True)

        return fn

    sweep = [4, 8, 16, args.steps]
    print("\nCaptum internal_batch_size sweep (one run each):")
    times = common.run_interleaved(
        [Contender(f"captum b={b}", theirs(b)) for b in sweep], warmup=1, repeats=1
    )
    best = min(sweep, key=lambda b: times[f"captum b={b}"].median)
    contenders = [Contender("cnnlens", ours), Contender(f"captum b={best}", theirs(best))]
    print(f"\nhead to head: {args.warmup} warm-up + {args.repeats} interleaved rounds")
    t = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
    common.print_table(t, reference="cnnlens", title="integrated gradients, one target")
    r = common.ratio(t, f"captum b={best}", "cnnlens")
    ours(), theirs(best)()
    d = float((last["cnnlens"] - last["captum"]).abs().max())
    scale = float(last["captum"].abs().max())
    print(f"captum / cnnlens = {r:.3f}  (target: cnnlens not slower: {common.verdict(r >= 1)})")
    print(f"max |cnnlens - captum| = {d:.2e} (map max {scale:.3g})")
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "integrated_gradients",
                "machine": info,
                "config": {"steps": args.steps, "target": TARGET, "captum_batch": best},
                "timings": {k: v.as_dict() for k, v in t.items()},
                "captum_over_cnnlens": r,
                "max_abs_diff": d,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
