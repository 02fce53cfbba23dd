"""Occlusion modes side by side: Captum, naive, incremental and approximate occlusion.

    python benchmarks/bench_occlusion_modes.py [--models effnet,resnet50,vgg16] [--grids 16/8,32/16]
        [--ppe 1,4,16] [--approx none:0.25,0.6:0.25] [--score prob] [--warmup 0] [--repeats 1]
        [--json out.json]

Models: the bundled EfficientNet-Lite0 (scikit-image ``chelsea``) and any torchvision
architecture by name (``resnet50``, ``vgg16``, ...) with random weights (seed 0, same input).
One 224 x 224 image, class 285, zero baseline; score ``prob`` (softmax probability, default)
or ``logit`` (better scaled for random-weight models, whose probabilities are all about
1/1000); grids window/stride 16/8 (729 windows) and 32/16 (169).

Contenders (interleaved A B C ... per round, see ``common.py``):

* ``captum``: ``Occlusion(softmax(net(.)))`` at its best ``perturbations_per_eval``, found by
  one timed run of every ``--ppe`` value on the 32/16 grid;
* ``exact``: ``cl.attribute(..., "occlusion", mode="exact")``: naive batched occlusion;
* ``incremental``: ``mode="incremental"`` (the default): exact, recomputes only the band each
  window can change (Krypton, SIGMOD 2019);
* ``approx cap:drill``: ``mode="approximate", field_cap=cap, drill_fraction=drill``.

Checks printed per grid: max |map - Captum's map| / Captum's map range for the exact modes,
and the same against the naive ``exact`` map (equal output: <= 1e-4); Pearson and SSIM of
every approximate map against the incremental map; the share of conv/linear multiply-adds
saved (``extras["macs_saved"]``) and the windows actually run. Goals: incremental >= 5x
faster than Captum at equal output; approximate >= 20x at Pearson >= 0.95.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
EQUAL_TOL = 1e-4  # max |diff| / map range that still counts as equal output


def _approx_specs(text: str) -> list[tuple[float | None, float]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        cap, drill = part.split(":")
        out.append((None if cap.lower() == "none" else float(cap), float(drill)))
    return out


def _load(name: str, cl, x_default):
    import torch

    if name == "effnet":
        return cl.load_model(), x_default
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    return net, x_default


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=0, repeats=1)
    parser.add_argument("--models", default="effnet,resnet50")
    parser.add_argument("--grids", default="16/8,32/16", help="window/stride pairs")
    parser.add_argument("--ppe", default="1,4,16", help="Captum perturbations_per_eval to try")
    parser.add_argument(
        "--approx", default="none:0.25,0.6:0.25", help="approximate settings cap:drill_fraction"
    )
    parser.add_argument("--score", default="prob", choices=("prob", "logit"))
    args = parser.parse_args(argv)

    import torch
    from captum.attr import Occlusion

    from cnnlens.attribution.incremental import approximate as ap

    cl, _, x = common.load_setup(args.image)
    info = common.machine_info()
    common.print_machine(info)
    grids = [tuple(int(v) for v in g.split("/")) for g in args.grids.split(",")]
    ppes = [int(p) for p in args.ppe.split(",")]
    approx = _approx_specs(args.approx)
    result: dict = {
        "benchmark": "occlusion_modes",
        "machine": info,
        "score": args.score,
        "runs": [],
    }
    summary = []

    for model_name in args.models.split(","):
        model, xin = _load(model_name, cl, x)
        net = model.net if hasattr(model, "net") else model
        net.eval()
        if args.score == "prob":
            occ = Occlusion(lambda t, net=net: torch.softmax(net(t), dim=1))
        else:
            occ = Occlusion(net)
        outputs: dict[str, torch.Tensor] = {}
        extras: dict[str, dict] = {}

        def captum(p, win, st, occ=occ, xin=xin, outputs=outputs):
            def fn():
                a = occ.attribute(
                    xin,
                    sliding_window_shapes=(3, win, win),
                    strides=(3, st, st),
                    baselines=0,
                    target=TARGET,
                    perturbations_per_eval=p,
                )
                outputs["captum"] = a[0, 0].detach()

            return fn

        def ours(name, win, st, model=model, xin=xin, outputs=outputs, extras=extras, **kw):
            def fn():
                e = cl.attribute(
                    model,
                    xin,
                    "occlusion",
                    target=TARGET,
                    window=win,
                    stride=st,
                    score=args.score,
                    **kw,
                )
                outputs[name] = e.maps[0, 0]
                extras[name] = e.extras

            return fn

        with torch.inference_mode():
            for b in sorted({4, 32, *ppes}):
                net(xin.expand(b, -1, -1, -1).contiguous())
        print(f"\n== {model_name}: Captum perturbations_per_eval sweep on the 32/16 grid")
        sweep = common.run_interleaved(
            [Contender(f"captum ppe={p}", captum(p, 32, 16)) for p in ppes], warmup=0, repeats=1
        )
        best = min(sweep.values(), key=lambda t: t.median)
        best_p = int(best.name.split("=")[1])
        print(f"best perturbations_per_eval: {best_p} ({common.format_seconds(best.median)})")

        for win, st in grids:
            outputs.clear()
            extras.clear()
            heads = [
                Contender("captum", captum(best_p, win, st)),
                Contender("exact", ours("exact", win, st, mode="exact")),
                Contender("incremental", ours("incremental", win, st, mode="incremental")),
            ]
            for cap, drill in approx:
                name = f"approx {cap}:{drill}"
                heads.append(
                    Contender(
                        name,
                        ours(
                            name, win, st, mode="approximate", field_cap=cap, drill_fraction=drill
                        ),
                    )
                )
            print(f"\n== {model_name}, window {win} / stride {st}")
            hh = common.run_interleaved(heads, warmup=args.warmup, repeats=args.repeats)
            common.print_table(hh, reference="captum", title="median time (ratio: / Captum)")
            ref = outputs["captum"]
            rng = float(ref.max() - ref.min())
            exact_map = outputs["incremental"]
            rows = []
            for name, t in hh.items():
                row = {
                    "model": model_name,
                    "grid": f"{win}/{st}",
                    "contender": name,
                    "median_s": t.median,
                    "captum_over_this": hh["captum"].median / t.median,
                }
                if name in ("exact", "incremental"):
                    row["max_diff_over_range"] = float((outputs[name] - ref).abs().max()) / rng
                    naive = outputs["exact"]
                    row["max_diff_over_range_vs_exact"] = float(
                        (outputs[name] - naive).abs().max() / (naive.max() - naive.min())
                    )
                if name.startswith("approx"):
                    row.update(ap.quality(outputs[name], exact_map))
                if name in extras:
                    row["macs_saved"] = extras[name]["macs_saved"]
                    row["windows_run"] = extras[name]["windows_run"]
                    row["mode_used"] = extras[name]["mode"]
                rows.append(row)
            for r in rows:
                qual = (
                    f"diff/range {r['max_diff_over_range']:.1e} "
                    f"(vs exact {r['max_diff_over_range_vs_exact']:.1e})"
                    if "max_diff_over_range" in r
                    else f"pearson {r['pearson']:.3f} ssim {r['ssim']:.3f}"
                    if "pearson" in r
                    else ""
                )
                saved = f"MACs saved {r['macs_saved']:.1%}" if "macs_saved" in r else ""
                print(
                    f"  {r['contender']:<18} Captum/this {r['captum_over_this']:6.2f}x  "
                    f"{qual:<28} {saved}  windows {r.get('windows_run', '')}"
                )
            inc = next(r for r in rows if r["contender"] == "incremental")
            ok_exact = (
                inc["captum_over_this"] >= 5 and inc["max_diff_over_range_vs_exact"] <= EQUAL_TOL
            )
            good = [r for r in rows if r.get("pearson", 0) >= 0.95]
            best_apx = max((r["captum_over_this"] for r in good), default=0.0)
            print(
                f"  goal exact >= 5x Captum at equal output: {common.verdict(ok_exact)} "
                f"({inc['captum_over_this']:.2f}x); goal approximate >= 20x at Pearson >= 0.95: "
                f"{common.verdict(best_apx >= 20)} (best {best_apx:.2f}x)"
            )
            summary += rows
            result["runs"].append(
                {
                    "model": model_name,
                    "window": win,
                    "stride": st,
                    "captum_ppe": best_p,
                    "timings": {k: v.as_dict() for k, v in hh.items()},
                    "rows": rows,
                }
            )
    result["summary"] = summary
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
