"""LIME, KernelSHAP and Shapley value sampling speed: cnnlens vs Captum at equal samples.

    python benchmarks/bench_lime_shap.py [--samples 500] [--orders 4] [--repeats 3]
                                         [--warmup 0] [--json out.json] [--no-shapley]

Bundled EfficientNet-Lite0, one 224x224 image, class 285. Every contender gets the same
segments: cnnlens' default SLIC superpixels of the image (``n_segments=50``), computed
once and passed to cnnlens as ``segments=`` and to Captum as ``feature_mask``
``(1, 1, H, W)``; the zero baseline; the logit of class 285. Each group runs interleaved
(A B C A B C ...), see ``common.py``.

``cnnlens lime``          ``cl.attribute(model, x, "lime", target=285, segments=labels,
                          samples=S)``: defaults otherwise (lasso 0.01, cosine kernel of
                          width 1, batches of the default size on a channels-last copy).
``captum lime ppe=1``     ``Lime(net).attribute(x, target=285, feature_mask=mask,
                          n_samples=S)``: Captum's defaults (the same lasso and kernel,
                          ``perturbations_per_eval=1``), the model as loaded.
``captum lime ppe=B``     the same with ``perturbations_per_eval`` = our batch size.
``... kernel_shap``       ``KernelShap(net)`` likewise, ``samples=S``.
``... shapley_sampling``  ``ShapleyValueSampling(net)`` with ``--orders`` permutations
                          (each costs one pass per segment).

The script also prints how far each pair of maps is apart (Pearson over segments; the
estimators agree in expectation only, their seeds cannot be shared) and the load average.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=0, repeats=3)
    parser.add_argument("--samples", type=int, default=500, help="LIME / KernelSHAP samples")
    parser.add_argument("--orders", type=int, default=4, help="Shapley sampling permutations")
    parser.add_argument("--no-shapley", action="store_true", help="time LIME and KernelSHAP only")
    args = parser.parse_args(argv)

    import torch
    from captum.attr import KernelShap, Lime, ShapleyValueSampling

    from cnnlens.attribution.segments import segment
    from cnnlens.core.batching import batch_size_for

    cl, model, x = common.load_setup(args.image)
    net = model.net.eval()
    info = common.machine_info()
    common.print_machine(info)
    seg = segment(model, x, "slic", 50)
    labels = seg.labels[0]
    mask = labels[None, None].contiguous()
    bs = batch_size_for(x, None)
    print(
        f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, {seg.counts[0]} SLIC "
        f"segments, our batch size {bs}, samples {args.samples}, orders {args.orders}"
    )

    last: dict[str, torch.Tensor] = {}

    def per_segment(maps: torch.Tensor) -> torch.Tensor:
        return torch.stack([maps[labels == k][0] for k in range(seg.counts[0])]).double()

    def ours(method: str, samples: int):
        def fn():
            e = cl.attribute(model, x, method, target=TARGET, segments=labels, samples=samples)
            last[f"cnnlens {method}"] = per_segment(e.maps[0, 0])

        return fn

    def theirs(cls, method: str, samples: int, ppe: int):
        def fn():
            # Captum runs its passes under no_grad itself
            out = cls(net).attribute(x, target=TARGET, feature_mask=mask, n_samples=samples,
                                     perturbations_per_eval=ppe)  # fmt: skip
            last[f"captum {method} ppe={ppe}"] = per_segment(out[0].sum(0))

        return fn

    groups = [("lime", Lime, args.samples), ("kernel_shap", KernelShap, args.samples)]
    if not args.no_shapley:
        groups.append(("shapley_sampling", ShapleyValueSampling, args.orders))
    result = {
        "benchmark": "lime_shap",
        "machine": info,
        "config": {"model": model.name, "input_shape": list(x.shape), "target": TARGET,
                   "segments": seg.counts[0], "batch_size": bs, "samples": args.samples,
                   "orders": args.orders, "warmup": args.warmup, "repeats": args.repeats},
    }  # fmt: skip
    for method, cls, samples in groups:
        contenders = [
            Contender(f"cnnlens {method}", ours(method, samples)),
            Contender(f"captum {method} ppe=1", theirs(cls, method, samples, 1)),
            Contender(f"captum {method} ppe={bs}", theirs(cls, method, samples, bs)),
        ]
        print(f"\n{method}: {args.warmup} warm-up + {args.repeats} interleaved rounds")
        t = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
        common.print_table(t, reference=f"cnnlens {method}", title=f"{method}, one target")
        row = {"timings": {k: v.as_dict() for k, v in t.items()}}
        for ppe in (1, bs):
            name = f"captum {method} ppe={ppe}"
            r = common.ratio(t, name, f"cnnlens {method}")
            a, b = last[f"cnnlens {method}"], last[name]
            pearson = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
            print(f"{name} / cnnlens = {r:.2f}x   Pearson(cnnlens, captum) = {pearson:.3f}")
            row[f"captum_ppe{ppe}_over_cnnlens"] = r
            row[f"pearson_ppe{ppe}"] = pearson
        result[method] = row
    print(f"\nload average at the end: {os.getloadavg()}")
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
