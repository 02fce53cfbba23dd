"""LRP speed: cnnlens vs zennit 0.5.1, composites epsilon_plus and epsilon_gamma_box.

    python benchmarks/bench_lrp.py [--repeats 5] [--warmup 1] [--json out.json]

Bundled EfficientNet-Lite0, one 224x224 image, class 285. Each pair runs interleaved
(A B A B ...), see ``common.py``.

``cnnlens <composite>``  ``cl.attribute(model, x, "lrp", target=285, composite=...)``.
``zennit <composite>``   ``Gradient(model=net, composite=EpsilonPlus(canonizers=...))``
                         (``EpsilonGammaBox(low, high, ...)``), entered in a ``with``
                         block per call (canonizers applied and reverted each time) and
                         called with ``logit * one_hot`` as output gradient. Its
                         canonizers for timm's EfficientNet (batch norms merged by name,
                         residual sums through zennit's ``Sum``) are the cross-check's,
                         imported from ``tests/attribution/test_lrp_zennit.py``.

The script prints the maps' Pearson correlation and max |difference| / range next to
the timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # helpers
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "attribution"))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
COMPOSITES = ("epsilon_plus", "epsilon_gamma_box")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=5)
    args = parser.parse_args(argv)

    import torch
    from test_lrp_zennit import efficientnet_canonizers
    from zennit.attribution import Gradient
    from zennit.composites import COMPOSITES as ZENNIT

    cl, model, x = common.load_setup(args.image)
    import cnnlens.attribution.lrp  # noqa: F401  (registers the method)

    net = model.net
    net.eval()
    info = common.machine_info()
    common.print_machine(info)
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}")
    spec = model.preprocess_spec
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    box = {"low": (0 - mean) / std, "high": (1 - mean) / std}
    last: dict[str, torch.Tensor] = {}

    def ours(comp: str):
        def fn():
            e = cl.attribute(model, x, "lrp", target=TARGET, composite=comp)
            last[f"cnnlens {comp}"] = e.maps[0, 0]

        return fn

    def theirs(comp: str):
        kwargs = box if comp == "epsilon_gamma_box" else {}

        def fn():
            composite = ZENNIT[comp](canonizers=efficientnet_canonizers(net), **kwargs)
            with Gradient(model=net, composite=composite) as attributor:
                _, rel = attributor(x, lambda out: out * torch.eye(out.shape[1])[[TARGET]])
            last[f"zennit {comp}"] = rel[0].sum(0)
            net.zero_grad(set_to_none=True)

        return fn

    result = {
        "benchmark": "lrp",
        "machine": info,
        "config": {"model": model.name, "input_shape": list(x.shape), "target": TARGET,
                   "warmup": args.warmup, "repeats": args.repeats, "image": args.image},
    }  # fmt: skip
    for comp in COMPOSITES:
        contenders = [Contender(f"cnnlens {comp}", ours(comp)),
                      Contender(f"zennit {comp}", theirs(comp))]  # fmt: skip
        print(f"\n{comp}: {args.warmup} warm-up + {args.repeats} interleaved rounds")
        t = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
        common.print_table(t, reference=f"cnnlens {comp}", title=f"LRP {comp}, one target")
        r = common.ratio(t, f"zennit {comp}", f"cnnlens {comp}")
        a, b = last[f"cnnlens {comp}"], last[f"zennit {comp}"]
        pearson = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
        diff = float((a - b).abs().max() / (b.max() - b.min()))
        print(f"zennit / cnnlens = {r:.3f}   (cnnlens is {r:.2f}x as fast)")
        print(f"Pearson {pearson:.7f}, max |difference| / range {diff:.2e}")
        result[comp] = {
            "timings": {k: v.as_dict() for k, v in t.items()},
            "zennit_over_cnnlens": r,
            "pearson": pearson,
            "max_abs_diff_over_range": diff,
        }
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
