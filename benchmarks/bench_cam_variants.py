"""Grad-CAM++ and Score-CAM speed: cnnlens vs pytorch-grad-cam.

    python benchmarks/bench_cam_variants.py [--repeats 5] [--warmup 1] [--json out.json]
                                            [--scorecam-repeats 3] [--no-scorecam]

Bundled EfficientNet-Lite0, one 224x224 image, class 285, layer ``bn2`` (1280
channels). Each pair runs interleaved (A B A B ...), see ``common.py``.

``cnnlens gradcampp``   ``cl.attribute(model, x, "gradcampp", target=285)``.
``pgc gradcampp``       ``GradCAMPlusPlus(model, target_layers=[net.bn2])`` with
                        ``[ClassifierOutputTarget(285)]``, called as a user would (the
                        model as loaded, parameters requiring grad; ``.grad`` cleared
                        untimed afterwards), built in a ``with`` block per call.
``cnnlens scorecam``    ``cl.attribute(model, x, "scorecam", target=285)``: 1280 masked
                        passes, default batch size, channels-last copy.
``pgc scorecam``        ``ScoreCAM(...)``, its default batch of 16 masked images.
                        (No warm-up round for Score-CAM: each call is 1280 passes.)

Score-CAM maps differ by definition (mask interpolation, see
``cnnlens.attribution.cam_variants``); the script prints the difference after
pytorch-grad-cam's min-max scaling next to the timings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM progress bars

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=5)
    parser.add_argument("--scorecam-repeats", type=int, default=3, help="timed Score-CAM rounds")
    parser.add_argument("--no-scorecam", action="store_true", help="time Grad-CAM++ only")
    args = parser.parse_args(argv)

    import torch
    from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cl, model, x = common.load_setup(args.image)
    import cnnlens.attribution.cam_variants  # noqa: F401  (registers the methods)

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
            last[f"cnnlens {method}"] = cl.attribute(model, x, method, target=TARGET).normalized()
            return last[f"cnnlens {method}"]

        return fn

    def theirs(cls, method: str):
        def fn():
            with cls(model=net, target_layers=[net.bn2]) as cam:
                out = cam(input_tensor=x, targets=[ClassifierOutputTarget(TARGET)])
            last[f"pgc {method}"] = torch.from_numpy(out)
            return out

        return fn

    def diff(method: str) -> float:
        return float((last[f"cnnlens {method}"][:, 0] - last[f"pgc {method}"]).abs().max())

    result = {
        "benchmark": "cam_variants",
        "machine": info,
        "config": {
            "model": model.name,
            "input_shape": list(x.shape),
            "target": TARGET,
            "layer": "bn2",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "scorecam_repeats": args.scorecam_repeats,
            "image": args.image,
        },
    }

    pairs = [("gradcampp", GradCAMPlusPlus, args.warmup, args.repeats)]
    if not args.no_scorecam:
        # A Score-CAM call is 1280 forward passes and warms itself up: no warm-up round.
        pairs.append(("scorecam", ScoreCAM, 0, args.scorecam_repeats))
    for method, cls, warmup, repeats in pairs:
        contenders = [
            Contender(f"cnnlens {method}", ours(method)),
            Contender(f"pgc {method}", theirs(cls, method), teardown=clear_grads),
        ]
        print(f"\n{method}: {warmup} warm-up + {repeats} interleaved rounds")
        t = common.run_interleaved(contenders, warmup=warmup, repeats=repeats)
        common.print_table(t, reference=f"cnnlens {method}", title=f"{method}, one target")
        r = common.ratio(t, f"pgc {method}", f"cnnlens {method}")
        d = diff(method)
        print(f"pgc / cnnlens = {r:.3f}   (cnnlens is {r:.2f}x as fast)")
        print(f"max |cnnlens - pgc| after min-max scaling: {d:.2e}")
        result[method] = {
            "timings": {k: v.as_dict() for k, v in t.items()},
            "pgc_over_cnnlens": r,
            "max_abs_diff_vs_pytorch_grad_cam": d,
        }
        if method == "scorecam":
            per_pass = t["cnnlens scorecam"].median / 1280
            print(f"cnnlens scorecam: {per_pass * 1e3:.1f} ms per masked image")
            result[method]["cnnlens_ms_per_masked_image"] = per_pass * 1e3

    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
