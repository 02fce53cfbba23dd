"""Grad-CAM speed: cnnlens vs pytorch-grad-cam vs one forward+backward pass.

    python benchmarks/bench_gradcam.py [--repeats 11] [--warmup 2] [--json out.json]

Contenders, all on the bundled EfficientNet-Lite0, one 224x224 image, class 285,
layer ``bn2`` (the last conv block, cnnlens' default for this model):

``forward``             inference-mode forward pass (context only).
``fwd+bwd(input)``      THE REFERENCE: forward with parameters frozen and the input
                        requiring grad, then ``torch.autograd.grad(logit_285, input)``:
                        one full backward pass, no parameter gradients.
``fwd+bwd(params)``     the "naive" cost: parameters requiring grad (as loaded),
                        ``logit_285.backward()`` fills every ``.grad``.
``cnnlens``             ``cl.attribute(model, x, "gradcam", target=285)``.
``pytorch-grad-cam``    ``GradCAM(model, target_layers=[net.bn2])`` called with
                        ``[ClassifierOutputTarget(285)]`` (built inside a ``with``
                        block per call so its hooks never stay on the shared model;
                        building it costs microseconds).

Several targets: the image's top-5 classes at once with cnnlens
(``target=[[c1, ..., c5]]``) vs pytorch-grad-cam called once per class (the
loop its API implies for one image) and, for completeness, pytorch-grad-cam on
the image repeated five times with one target per copy.

Acceptance target: cnnlens Grad-CAM median <= 1.1 x the reference median.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
TOP_K = 5
LIMIT = 1.1


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=2, repeats=11)
    parser.add_argument("--no-topk", action="store_true", help="skip the several-targets part")
    args = parser.parse_args(argv)

    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cl, model, x = common.load_setup(args.image)
    net = model.net
    net.eval()
    params = list(net.parameters())
    info = common.machine_info()
    common.print_machine(info)
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, layer bn2")

    # The model comes with requires_grad=True everywhere; every contender leaves it so.
    def set_grad(flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def clear_grads() -> None:
        net.zero_grad(set_to_none=True)

    x_in = x.detach().clone()

    def forward_only():
        with torch.inference_mode():
            return net(x)

    def ref_setup():
        set_grad(False)
        x_in.requires_grad_(True)

    def ref_teardown():
        x_in.requires_grad_(False)
        set_grad(True)

    def fwd_bwd_input():
        logits = net(x_in)
        return torch.autograd.grad(logits[:, TARGET].sum(), x_in)

    def fwd_bwd_params():
        logits = net(x)
        logits[:, TARGET].sum().backward()

    def ours():
        return cl.attribute(model, x, "gradcam", target=TARGET)

    def pgc(targets=(TARGET,), inp=None):
        inp = x if inp is None else inp
        with GradCAM(model=net, target_layers=[net.bn2]) as cam:
            return cam(input_tensor=inp, targets=[ClassifierOutputTarget(c) for c in targets])

    # ---- correctness: same maps after pytorch-grad-cam's min-max scaling
    ours_map = ours().normalized()[0, 0]
    pgc_map = torch.from_numpy(pgc())[0]
    diff_top1 = float((ours_map - pgc_map).abs().max())
    print(f"max |cnnlens - pytorch-grad-cam| after min-max scaling: {diff_top1:.2e}")
    clear_grads()

    contenders = [
        Contender("forward", forward_only),
        Contender("fwd+bwd(input)", fwd_bwd_input, setup=ref_setup, teardown=ref_teardown),
        Contender("fwd+bwd(params)", fwd_bwd_params, teardown=clear_grads),
        Contender("cnnlens", ours),
        Contender("pytorch-grad-cam", pgc, teardown=clear_grads),
    ]
    print(f"\none target: {args.warmup} warm-up + {args.repeats} interleaved rounds")
    t1 = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
    ref = "fwd+bwd(input)"
    common.print_table(
        t1, reference=ref, title="Grad-CAM, one target (ratio column: median / reference)"
    )
    r_ref = common.ratio(t1, "cnnlens", ref)
    r_naive = common.ratio(t1, "cnnlens", "fwd+bwd(params)")
    r_fwd = common.ratio(t1, "cnnlens", "forward")
    r_pgc = common.ratio(t1, "pytorch-grad-cam", "cnnlens")
    print(
        f"\ncnnlens / fwd+bwd(input)      = {r_ref:.3f}"
        f"   (target <= {LIMIT}: {common.verdict(r_ref <= LIMIT)})"
    )
    print(f"cnnlens / fwd+bwd(params)     = {r_naive:.3f}")
    print(f"cnnlens / forward             = {r_fwd:.3f}")
    print(f"pytorch-grad-cam / cnnlens    = {r_pgc:.3f}   (cnnlens is {r_pgc:.2f}x as fast)")

    result = {
        "benchmark": "gradcam",
        "machine": info,
        "config": {
            "model": model.name,
            "input_shape": list(x.shape),
            "target": TARGET,
            "layer": "bn2",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "image": args.image,
        },
        "one_target": {k: v.as_dict() for k, v in t1.items()},
        "max_abs_diff_vs_pytorch_grad_cam": diff_top1,
        "ratios": {
            "cnnlens_over_fwd_bwd_input": r_ref,
            "cnnlens_over_fwd_bwd_params": r_naive,
            "cnnlens_over_forward": r_fwd,
            "pytorch_grad_cam_over_cnnlens": r_pgc,
        },
        "target_met": {"gradcam_within_1.1x_fwd_bwd": r_ref <= LIMIT},
    }

    if not args.no_topk:
        with torch.inference_mode():
            top = net(x).topk(TOP_K, dim=1).indices[0].tolist()
        print(f"\ntop-{TOP_K} classes: {top}")
        x_rep = x.repeat(TOP_K, 1, 1, 1)

        def ours_topk():
            return cl.attribute(model, x, "gradcam", target=[top])

        def pgc_loop():
            with GradCAM(model=net, target_layers=[net.bn2]) as cam:
                return [cam(input_tensor=x, targets=[ClassifierOutputTarget(c)]) for c in top]

        def pgc_batched():
            return pgc(top, x_rep)

        ours_maps = ours_topk().normalized()[0]
        loop_maps = torch.from_numpy(__import__("numpy").concatenate(pgc_loop()))
        diff_topk = float((ours_maps - loop_maps).abs().max())
        print(f"max |cnnlens - pytorch-grad-cam| over the {TOP_K} maps: {diff_topk:.2e}")
        clear_grads()

        contenders_k = [
            Contender("fwd+bwd(input)", fwd_bwd_input, setup=ref_setup, teardown=ref_teardown),
            Contender("cnnlens top1", ours),
            Contender(f"cnnlens top{TOP_K}", ours_topk),
            Contender(f"pgc loop x{TOP_K}", pgc_loop, teardown=clear_grads),
            Contender(f"pgc batch of {TOP_K}", pgc_batched, teardown=clear_grads),
        ]
        print(f"\ntop-{TOP_K}: {args.warmup} warm-up + {args.repeats} interleaved rounds")
        tk = common.run_interleaved(contenders_k, warmup=args.warmup, repeats=args.repeats)
        common.print_table(
            tk, reference=f"cnnlens top{TOP_K}", title=f"Grad-CAM, top-{TOP_K} targets of one image"
        )
        rk_loop = common.ratio(tk, f"pgc loop x{TOP_K}", f"cnnlens top{TOP_K}")
        rk_batch = common.ratio(tk, f"pgc batch of {TOP_K}", f"cnnlens top{TOP_K}")
        rk_one = common.ratio(tk, f"cnnlens top{TOP_K}", "cnnlens top1")
        rk_ref = common.ratio(tk, f"cnnlens top{TOP_K}", "fwd+bwd(input)")
        print(f"\npgc loop / cnnlens top{TOP_K}        = {rk_loop:.3f}")
        print(f"pgc batched / cnnlens top{TOP_K}     = {rk_batch:.3f}")
        print(f"cnnlens top{TOP_K} / cnnlens top1    = {rk_one:.3f}")
        print(f"cnnlens top{TOP_K} / fwd+bwd(input)  = {rk_ref:.3f}")
        result["top_k"] = {
            "k": TOP_K,
            "classes": top,
            "timings": {k: v.as_dict() for k, v in tk.items()},
            "max_abs_diff_vs_pytorch_grad_cam": diff_topk,
            "ratios": {
                "pgc_loop_over_cnnlens": rk_loop,
                "pgc_batched_over_cnnlens": rk_batch,
                "cnnlens_topk_over_top1": rk_one,
                "cnnlens_topk_over_fwd_bwd_input": rk_ref,
            },
        }

    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
