"""Occlusion speed: cnnlens vs Captum ``Occlusion`` at its best ``perturbations_per_eval``.

    python benchmarks/bench_occlusion.py [--quick] [--repeats 3] [--json out.json]

Both sides compute the same map on the bundled EfficientNet-Lite0, one 224x224
image, class 285: the mean drop of the softmax probability over the windows
covering each pixel, zero baseline.

* Captum: ``Occlusion(lambda t: torch.softmax(net(t), 1)).attribute(x,
  sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0, target=285,
  perturbations_per_eval=P)`` (any output channel; all three are equal).
* cnnlens: ``cl.attribute(model, x, "occlusion", target=285, window=w,
  stride=s, baseline="zero", score="prob", batch_size=B)``.

Full run: window 16, stride 8 (27 x 27 = 729 positions). ``--quick``: window 32,
stride 16 (13 x 13 = 169 positions). Both grids end flush with the border, so
Captum and cnnlens place exactly the same windows.

Phases:
1. one untimed forward pass per batch size (oneDNN primitives, allocator);
2. sweep: Captum at every P in ``--ppe`` and cnnlens at every B in ``--batch-sizes``
   (``none`` = the library default), interleaved pairwise, ``--sweep-repeats``
   rounds; the outputs of every run are checked against each other;
3. head to head: cnnlens default, cnnlens at its best B (if different) and
   Captum at its best P, ``--warmup`` + ``--repeats`` interleaved rounds.

Acceptance target: cnnlens (default batch size) median <= Captum (best P) median,
with max |difference| of the maps at float32 round-off level.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
EQUAL_TOL = 1e-5  # max |diff| of maps that still counts as "equal output" (float32)


def _sizes(text: str) -> list[int | None]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            out.append(None if part in ("none", "default") else int(part))
    return out


def _label_bs(b: int | None) -> str:
    return "default" if b is None else str(b)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=3)
    parser.add_argument("--quick", action="store_true", help="window 32, stride 16 (169 positions)")
    parser.add_argument(
        "--ppe", default="1,2,3,4,8,16,32,64", help="Captum perturbations_per_eval to sweep"
    )
    parser.add_argument(
        "--batch-sizes",
        default="none,1,2,3,4,8,16,32,64",
        help="cnnlens batch_size values to sweep (none = default)",
    )
    parser.add_argument(
        "--sweep-repeats", type=int, default=1, help="timed rounds of the sweep (default 1)"
    )
    parser.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the sweep: compare --ppe's first value and --batch-sizes' first value only",
    )
    args = parser.parse_args(argv)

    import torch
    from captum.attr import Occlusion

    cl, model, x = common.load_setup(args.image)
    net = model.net
    net.eval()
    window, stride = (32, 16) if args.quick else (16, 8)
    info = common.machine_info()
    common.print_machine(info)

    from cnnlens.attribution.occlusion import window_positions
    from cnnlens.core.tensors import default_batch_size

    h, w = x.shape[-2:]
    n_pos = len(window_positions(h, window, stride)) * len(window_positions(w, window, stride))
    default_bs = default_batch_size(x)
    ppes = [p for p in _sizes(args.ppe) if p is not None]
    sizes = _sizes(args.batch_sizes)
    print(
        f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, "
        f"window {window}, stride {stride}"
        f" -> {n_pos} positions (+1 unoccluded pass); cnnlens default batch_size = {default_bs}"
    )

    occ = Occlusion(lambda t: torch.softmax(net(t), dim=1))
    outputs: dict[str, torch.Tensor] = {}

    def captum_fn(p: int):
        name = f"captum ppe={p}"

        def fn():
            attr = occ.attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, stride, stride),
                baselines=0,
                target=TARGET,
                perturbations_per_eval=p,
            )
            outputs[name] = attr[0].detach()  # (3, H, W), channels equal
            return attr

        return name, fn

    def ours_fn(b: int | None):
        name = f"cnnlens bs={_label_bs(b)}"

        def fn():
            e = cl.attribute(
                model,
                x,
                "occlusion",
                target=TARGET,
                window=window,
                stride=stride,
                baseline="zero",
                score="prob",
                batch_size=b,
            )
            outputs[name] = e.maps[0, 0].detach()
            return e

        return name, fn

    # ---- phase 1: one forward per batch shape
    with torch.inference_mode():
        for b in sorted({default_bs, *ppes, *(s for s in sizes if s is not None)}):
            net(x.expand(b, -1, -1, -1).contiguous())

    result: dict = {
        "benchmark": "occlusion",
        "machine": info,
        "config": {
            "model": model.name,
            "input_shape": list(x.shape),
            "target": TARGET,
            "window": window,
            "stride": stride,
            "positions": n_pos,
            "quick": args.quick,
            "default_batch_size": default_bs,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "sweep_repeats": args.sweep_repeats,
            "image": args.image,
        },
    }

    # ---- phase 2: sweep
    if args.no_sweep:
        best_p, best_b = ppes[0], sizes[0]
    else:
        # cnnlens default first, then Captum P next to cnnlens B for each value (A B A B ...)
        pairs: list[Contender] = []
        if None in sizes:
            pairs.append(Contender(*ours_fn(None), meta={"batch_size": default_bs}))
        for v in sorted(set(ppes) | {b for b in sizes if b is not None}):
            if v in ppes:
                pairs.append(Contender(*captum_fn(v), meta={"ppe": v}))
            if v in sizes:
                pairs.append(Contender(*ours_fn(v), meta={"batch_size": v}))
        print(f"\nsweep: {args.sweep_repeats} round(s) of {len(pairs)} runs")
        sweep = common.run_interleaved(pairs, warmup=0, repeats=args.sweep_repeats)
        cap = {k: v for k, v in sweep.items() if k.startswith("captum")}
        ours = {k: v for k, v in sweep.items() if k.startswith("cnnlens")}
        common.print_table(cap, title="Captum Occlusion, perturbations_per_eval sweep")
        common.print_table(ours, title="cnnlens occlusion, batch_size sweep")
        for t in sweep.values():
            t.meta["ms_per_forward_image"] = t.median / (n_pos + 1) * 1e3
        best_cap = min(cap.values(), key=lambda t: t.median)
        best_ours = min(ours.values(), key=lambda t: t.median)
        best_p = best_cap.meta["ppe"]
        best_b_name = best_ours.name.split("=", 1)[1]
        best_b = None if best_b_name == "default" else int(best_b_name)
        print(
            f"\nfastest Captum ppe: {best_p} ({common.format_seconds(best_cap.median)}); "
            f"fastest cnnlens batch_size: {_label_bs(best_b)} "
            f"({common.format_seconds(best_ours.median)})"
        )
        result["sweep"] = {k: v.as_dict() for k, v in sweep.items()}

    # ---- equality of outputs
    if not outputs:  # --no-sweep: one run of each to compare
        captum_fn(best_p)[1]()
        ours_fn(best_b)[1]()
    ref_name = f"captum ppe={best_p}"
    ref_out = outputs[ref_name]
    chan_diff = float((ref_out - ref_out[0:1]).abs().max())
    diffs = {
        name: float((out - ref_out[0]).abs().max())
        for name, out in outputs.items()
        if name.startswith("cnnlens")
    }
    cap_diffs = {
        name: float((out - ref_out).abs().max())
        for name, out in outputs.items()
        if name.startswith("captum")
    }
    print(
        f"\noutput check vs {ref_name} "
        f"(max abs diff; map values up to {float(ref_out.abs().max()):.3g}):"
    )
    print(f"  Captum channels among themselves: {chan_diff:.2e}")
    for name, d in {**diffs, **cap_diffs}.items():
        if name != ref_name:
            print(f"  {name:<20} {d:.2e}")
    max_diff = max(diffs.values())
    equal = max_diff <= EQUAL_TOL
    result["max_abs_diff"] = {
        "cnnlens_vs_captum": diffs,
        "captum_vs_captum": cap_diffs,
        "captum_channels": chan_diff,
    }

    # ---- phase 3: head to head
    heads = [Contender(*ours_fn(None))]
    if best_b is not None and best_b != default_bs:
        heads.append(Contender(*ours_fn(best_b)))
    heads.append(Contender(*captum_fn(best_p)))
    print(f"\nhead to head: {args.warmup} warm-up + {args.repeats} interleaved rounds")
    hh = common.run_interleaved(heads, warmup=args.warmup, repeats=args.repeats)
    common.print_table(
        hh,
        reference=ref_name,
        title=f"Occlusion, {n_pos} positions (ratio column: median / Captum best)",
    )
    r_default = common.ratio(hh, "cnnlens bs=default", ref_name)
    print(
        f"\ncnnlens(default bs={default_bs}) / Captum(ppe={best_p}) = {r_default:.3f}"
        f"   (Captum / cnnlens = {1 / r_default:.3f})"
    )
    r_best = None
    if len(heads) == 3:
        r_best = common.ratio(hh, heads[1].name, ref_name)
        print(f"cnnlens(bs={best_b}) / Captum(ppe={best_p})        = {r_best:.3f}")
    print(f"max |cnnlens - Captum| = {max_diff:.2e} (equal output: {'yes' if equal else 'NO'})")
    met = r_default <= 1.0 and equal
    print(
        "target (cnnlens default at least as fast as Captum at equal output): "
        f"{common.verdict(met)}"
    )

    result["head_to_head"] = {k: v.as_dict() for k, v in hh.items()}
    result["best"] = {
        "captum_ppe": best_p,
        "cnnlens_batch_size": best_b if best_b is not None else default_bs,
    }
    result["ratios"] = {
        "cnnlens_default_over_captum_best": r_default,
        "cnnlens_best_over_captum_best": r_best,
    }
    result["target_met"] = {
        "cnnlens_default_at_least_as_fast_as_captum": met,
        "equal_output": equal,
    }
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
