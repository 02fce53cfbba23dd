"""DeepLIFT, DeepLIFT-SHAP and GradientSHAP speed: cnnlens vs Captum 0.9.

    python benchmarks/bench_deeplift.py [--repeats 3] [--warmup 1] [--json out.json]
                                        [--only deeplift,deeplift_shap,gradient_shap]

Bundled EfficientNet-Lite0, one 224x224 image, class 285. Each pair runs interleaved
(A B A B ...), see ``common.py``.

``cnnlens deeplift``       ``cl.attribute(model, x, "deeplift", target=285)`` (zero baseline).
``captum deeplift``        ``DeepLift(net).attribute(x, zeros, target=285)`` on the model as
                           loaded (Captum has no ReLU6 rule: it keeps the gradient there, so
                           its map is not DeepLIFT's; the timing is what a user gets).
``captum+relu6 ...``       the same call with ``nn.ReLU6`` added to Captum's table of
                           nonlinearities (its rescale rule): the same maps as cnnlens
                           (Pearson printed), the like-for-like comparison.
``cnnlens deeplift_shap``  ``baselines=refs``: 8 references (the image blurred plus noise).
``captum deeplift_shap``   ``DeepLiftShap(net).attribute(x, refs, target=285)``.
``cnnlens gradient_shap``  ``baselines=refs, samples=50, stdev=0.1``.
``captum gradient_shap``   ``GradientShap(net).attribute(x, refs, n_samples=50, stdevs=0.1)``
                           (all 50 samples in one batch, Captum's default).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
METHODS = ("deeplift", "deeplift_shap", "gradient_shap")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=3)
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="captum")

    import torch
    from captum.attr import DeepLift, DeepLiftShap, GradientShap
    from captum.attr._core import deep_lift

    cl, model, x = common.load_setup(args.image)
    net = model.net.eval()
    g = torch.Generator().manual_seed(0)
    from cnnlens.core.tensors import gaussian_blur

    blur = gaussian_blur(x, sigma=14.0)
    refs = blur + 0.2 * torch.randn(8, *x.shape[1:], generator=g)
    info = common.machine_info()
    common.print_machine(info)
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, 8 references")

    ours = {
        "deeplift": lambda: cl.attribute(model, x, "deeplift", target=TARGET),
        "deeplift_shap": lambda: cl.attribute(model, x, "deeplift_shap", target=TARGET,
                                              baselines=refs),
        "gradient_shap": lambda: cl.attribute(model, x, "gradient_shap", target=TARGET,
                                              baselines=refs, samples=50, stdev=0.1),
    }  # fmt: skip
    theirs = {
        "deeplift": lambda: DeepLift(net).attribute(x, torch.zeros_like(x), target=TARGET),
        "deeplift_shap": lambda: DeepLiftShap(net).attribute(x, refs, target=TARGET),
        "gradient_shap": lambda: GradientShap(net).attribute(x, refs, target=TARGET,
                                                             n_samples=50, stdevs=0.1),
    }  # fmt: skip
    table = deep_lift.SUPPORTED_NON_LINEAR

    def relu6_rule() -> None:
        table[torch.nn.ReLU6] = deep_lift.nonlinear

    def no_relu6_rule() -> None:
        table.pop(torch.nn.ReLU6, None)
        net.zero_grad()

    def pearson(a, b) -> float:
        pair = torch.stack([a.flatten().double(), b.detach().sum(1).flatten().double()])
        return float(torch.corrcoef(pair)[0, 1])

    result = {"benchmark": "deeplift", "machine": info, "config": vars(args)}
    for method in [m for m in args.only.split(",") if m]:
        contenders = [
            Contender(f"cnnlens {method}", ours[method]),
            Contender(f"captum {method}", theirs[method], teardown=lambda: net.zero_grad()),
        ]
        if method != "gradient_shap":
            relu6_rule()
            same = pearson(ours[method]().maps, theirs[method]())
            no_relu6_rule()
            print(f"{method}: Pearson cnnlens vs captum+relu6 = {same:.6f}")
            result[f"{method}_pearson_vs_captum_relu6"] = same
            contenders.append(Contender(f"captum+relu6 {method}", theirs[method],
                                        setup=relu6_rule, teardown=no_relu6_rule))  # fmt: skip
        print(f"\n{method}: {args.warmup} warm-up + {args.repeats} interleaved rounds")
        t = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
        common.print_table(t, reference=f"cnnlens {method}", title=method)
        r = common.ratio(t, f"captum {method}", f"cnnlens {method}")
        print(f"captum / cnnlens = {r:.3f}   (cnnlens is {r:.2f}x as fast)")
        result[method] = {"timings": {k: v.as_dict() for k, v in t.items()}, "captum_over": r}
        if method != "gradient_shap":
            r6 = common.ratio(t, f"captum+relu6 {method}", f"cnnlens {method}")
            print(f"captum+relu6 / cnnlens = {r6:.3f}")
            result[method]["captum_relu6_over"] = r6
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
