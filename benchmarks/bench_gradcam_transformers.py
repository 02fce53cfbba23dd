"""Grad-CAM speed on transformers: cnnlens vs pytorch-grad-cam, ViT-B/16 and Swin-T.

    python benchmarks/bench_gradcam_transformers.py [--repeats 7] [--warmup 1] [--json out.json]

Both torchvision models with random weights (no download; the zero-initialised ViT
head gets random weights), eval mode, one 224x224 photo (scikit-image's ``chelsea``,
ImageNet normalisation), class 3, at cnnlens' default layer:
``encoder.layers.encoder_layer_11.ln_1`` (tokens, 1 class token + 14x14) for ViT-B/16,
``features`` (channels last, 7x7) for Swin-T. pytorch-grad-cam gets the same layer and
the ``reshape_transform`` its docs give for ViT and Swin.

Contenders per model (all in one process, interleaved rounds, medians):

``fwd+bwd(input)``        forward with frozen parameters and an input that requires
                          grad, then ``torch.autograd.grad(logit, input)`` (context).
``cnnlens``               ``cl.attribute(net, x, "gradcam", target=3)``; the default
                          layer is found once per model and size (in the warm-up).
``pytorch-grad-cam``      ``GradCAM(model, target_layers, reshape_transform)`` as its
                          docs use it: parameters requiring grad (their ``.grad`` is
                          filled and cleared after each call, untimed).
``pgc(frozen)``           the same inside ``cl.preserved(net)`` with an input that
                          requires grad: no parameter gradients, a fairer peer.

Acceptance (issue 18): cnnlens is not slower than pytorch-grad-cam on either model.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 3


def vit_reshape(tensor, height=14, width=14):
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape(tensor, height=7, width=7):
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
    return result.transpose(2, 3).transpose(1, 2)


MODELS = {
    "vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", vit_reshape),
    "swin_t": ("features", swin_reshape),
}


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(torchvision.models, name)()
    if name == "vit_b_16":
        torch.nn.init.normal_(net.heads.head.weight, std=0.02)
    return net.eval()


def bench_model(cl, name: str, x, args) -> dict:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = build(name)
    layer, reshape = MODELS[name]
    module = dict(net.named_modules())[layer]
    params = list(net.parameters())
    x_in = x.detach().clone()
    targets = [ClassifierOutputTarget(TARGET)]

    def set_grad(flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def ref_setup():
        set_grad(False)
        x_in.requires_grad_(True)

    def ref_input():
        x_in.requires_grad_(True)

    def ref_teardown():
        x_in.requires_grad_(False)
        set_grad(True)

    def fwd_bwd_input():
        return torch.autograd.grad(net(x_in)[:, TARGET].sum(), x_in)

    def ours():
        return cl.attribute(net, x, "gradcam", target=TARGET)

    def pgc():
        with GradCAM(model=net, target_layers=[module], reshape_transform=reshape) as cam:
            return cam(input_tensor=x, targets=targets)

    def pgc_frozen():
        with cl.preserved(net), GradCAM(net, [module], reshape_transform=reshape) as cam:
            return cam(input_tensor=x_in, targets=targets)

    def clear_grads():
        net.zero_grad(set_to_none=True)

    first = ours()
    assert first.extras["layer"] == layer, first.extras
    theirs = torch.from_numpy(pgc())[0]
    clear_grads()
    mine = first.normalized()[0, 0]
    diff = float((mine - theirs).abs().max())
    r = float(torch.corrcoef(torch.stack([mine.flatten(), theirs.flatten()]))[0, 1])
    print(f"\n{name}: layer {layer} ({first.extras['layout']})")
    print(f"  vs pytorch-grad-cam after min-max: Pearson {r:.7f}, max |diff| {diff:.1e}")
    contenders = [
        Contender("fwd+bwd(input)", fwd_bwd_input, setup=ref_setup, teardown=ref_teardown),
        Contender("cnnlens", ours),
        Contender("pytorch-grad-cam", pgc, teardown=clear_grads),
        Contender("pgc(frozen)", pgc_frozen, setup=ref_input, teardown=ref_teardown),
    ]
    t = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
    common.print_table(t, reference="cnnlens", title=f"Grad-CAM on {name} (ratio: / cnnlens)")
    ratios = {
        "pytorch_grad_cam_over_cnnlens": common.ratio(t, "pytorch-grad-cam", "cnnlens"),
        "pgc_frozen_over_cnnlens": common.ratio(t, "pgc(frozen)", "cnnlens"),
        "cnnlens_over_fwd_bwd_input": common.ratio(t, "cnnlens", "fwd+bwd(input)"),
    }
    for k, v in ratios.items():
        print(f"  {k:32s} = {v:.3f}")
    ok = ratios["pgc_frozen_over_cnnlens"] >= 1.0 and ratios["pytorch_grad_cam_over_cnnlens"] >= 1
    print(f"  cnnlens not slower than pytorch-grad-cam: {common.verdict(ok)}")
    return {
        "layer": layer,
        "layout": first.extras["layout"],
        "pearson_vs_pytorch_grad_cam": r,
        "max_abs_diff_vs_pytorch_grad_cam": diff,
        "timings": {k: v.as_dict() for k, v in t.items()},
        "ratios": ratios,
        "target_met": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    cl = common.import_cnnlens()
    import torch

    info = common.machine_info()
    common.print_machine(info)
    img = cl.sample_images([args.image])[args.image]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pixels = torch.tensor(__import__("numpy").array(img.convert("RGB").resize((224, 224))))
    x = ((pixels.permute(2, 0, 1).float() / 255 - mean) / std).unsqueeze(0)
    results = {name: bench_model(cl, name, x, args) for name in args.models}
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "gradcam_transformers",
                "machine": info,
                "config": {"target": TARGET, "warmup": args.warmup, "repeats": args.repeats},
                "models": results,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
