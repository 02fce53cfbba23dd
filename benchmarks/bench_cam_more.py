"""Ablation-CAM, XGrad-CAM, HiResCAM, Eigen-CAM and FullGrad speed: cnnlens vs pytorch-grad-cam.

    python benchmarks/bench_cam_more.py [--repeats 5] [--warmup 1] [--json out.json]
                                        [--ablation-repeats 1] [--no-ablation]

Bundled EfficientNet-Lite0, one 224x224 image, class 285, layer ``bn2`` (1280
channels; FullGrad takes no layer). Each pair runs interleaved (A B A B ...), see
``common.py``.

``cnnlens METHOD``    ``cl.attribute(model, x, METHOD, target=285)``.
``pgc METHOD``        ``XGradCAM`` / ``HiResCAM`` / ``EigenCAM`` / ``AblationCAM``
                      ``(model, target_layers=[net.bn2])``, ``FullGrad(model, [])``, with
                      ``[ClassifierOutputTarget(285)]``, called as a user would (the model
                      as loaded, parameters requiring grad; ``.grad`` cleared untimed
                      afterwards), built in a ``with`` block per call. AblationCAM at its
                      default batch of 32 ablated copies per pass.

Ablation-CAM is 1280 ablated passes per call on both sides: no warm-up round, and
``--ablation-repeats`` timed rounds (default 1). The goal is cnnlens >= 2x as fast.

The script prints, next to each timing, the Pearson correlation of the two maps and
their largest difference after min-max scaling. pytorch-grad-cam's FullGrad does not
recognise timm's ``BatchNormAct2d`` (it hooks exact ``nn.BatchNorm2d`` types), so on
this model its map is the input term alone and differs from ours by definition (see
``cnnlens.attribution.fullgrad``); its timing is still the user's experience. Eigen-CAM
maps agree up to the arbitrary sign of pytorch-grad-cam's singular vector.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Ablation-CAM progress bars

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
FAST = ("xgradcam", "hirescam", "eigencam", "fullgrad")
PEER = {
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
    "fullgrad": "FullGrad",
    "ablationcam": "AblationCAM",
}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=5)
    parser.add_argument("--ablation-repeats", type=int, default=1, help="timed Ablation rounds")
    parser.add_argument("--no-ablation", action="store_true", help="skip Ablation-CAM")
    parser.add_argument("--only", nargs="*", default=None, help="methods to time (default all)")
    args = parser.parse_args(argv)

    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cl, model, x = common.load_setup(args.image)
    import cnnlens.methods  # noqa: F401  (registers the methods)

    net = model.net
    net.eval()
    info = common.machine_info()
    common.print_machine(info)
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, layer bn2")

    last: dict[str, torch.Tensor] = {}

    def clear_grads() -> None:
        net.zero_grad(set_to_none=True)

    def ours(method: str):
        def fn():
            last[f"cnnlens {method}"] = cl.attribute(model, x, method, target=TARGET).maps[:, 0]

        return fn

    def theirs(method: str):
        cls = getattr(pytorch_grad_cam, PEER[method])
        layers = [] if method == "fullgrad" else [net.bn2]

        def fn():
            with cls(model=net, target_layers=layers) as cam:
                out = cam(input_tensor=x, targets=[ClassifierOutputTarget(TARGET)])
            last[f"pgc {method}"] = torch.from_numpy(out)

        return fn

    def compare(method: str) -> tuple[float, float]:
        a, b = last[f"cnnlens {method}"], last[f"pgc {method}"]
        r = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])
        flat = a.flatten(1)
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        d = float((((flat - lo) / (hi - lo)).view_as(a) - b).abs().max())
        return r, d

    result = {
        "benchmark": "cam_more",
        "machine": info,
        "config": {
            "model": model.name,
            "input_shape": list(x.shape),
            "target": TARGET,
            "layer": "bn2",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "ablation_repeats": args.ablation_repeats,
            "image": args.image,
        },
    }
    plan = [(m, args.warmup, args.repeats) for m in FAST]
    if not args.no_ablation:
        plan.append(("ablationcam", 0, args.ablation_repeats))
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    for method, warmup, repeats in plan:
        contenders = [
            Contender(f"cnnlens {method}", ours(method)),
            Contender(f"pgc {method}", theirs(method), teardown=clear_grads),
        ]
        print(f"\n{method}: {warmup} warm-up + {repeats} interleaved rounds")
        t = common.run_interleaved(contenders, warmup=warmup, repeats=repeats)
        common.print_table(t, reference=f"cnnlens {method}", title=f"{method}, one target")
        ratio = common.ratio(t, f"pgc {method}", f"cnnlens {method}")
        r, d = compare(method)
        print(f"pgc / cnnlens = {ratio:.3f}   (cnnlens is {ratio:.2f}x as fast)")
        print(f"Pearson {r:.7f}, max |difference| after min-max {d:.2e}")
        entry = {
            "timings": {k: v.as_dict() for k, v in t.items()},
            "pgc_over_cnnlens": ratio,
            "pearson_vs_pytorch_grad_cam": r,
            "max_abs_diff_vs_pytorch_grad_cam": d,
        }
        if method == "ablationcam":
            entry["goal_2x"] = common.verdict(ratio >= 2.0)
            print(f"goal (>= 2x as fast): {entry['goal_2x']}")
        result[method] = entry

    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
