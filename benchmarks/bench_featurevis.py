"""Activation maximisation speed: time per rendered channel, batched vs one at a time.

    python benchmarks/bench_featurevis.py [--channels 16] [--steps 32] [--repeats 3]
    PYTHONPATH=/tmp/lucent_env python benchmarks/bench_featurevis.py   # with torch-lucent

Every contender renders the same channels of the bundled EfficientNet-Lite0's
``blocks.3`` (80 x 14 x 14 at 224 px) for the same number of steps, with a
128-px Fourier image in decorrelated colour, the standard robustness
transforms and Adam at 0.05; parameters are frozen for all of them:

``cnnlens batched``           ``cl.featurevis.render(model, channels)``: one image per
                              channel in one batch; the forward pass stops after
                              ``blocks.3``.
``cnnlens batched, full``     the same with ``+ 0 * class_logit(0)`` added to every
                              objective, which forces the full forward pass
                              (what batching alone buys).
``cnnlens one at a time``     ``render`` called once per channel.
``plain loop``                THE PEER when torch-lucent is missing: the loop a user
                              writes by hand, one channel at a time, with cnnlens'
                              parameterisation and transforms, a forward hook on the
                              layer and a full forward pass every step.
``lucent one at a time``      torch-lucent's ``render_vis`` per channel (its standard
                              transforms; its 224-px upsampling switched off with
                              ``fixed_image_size=128`` so the work is the same).
``lucent batched``            ``render_vis`` with ``param.image(128, batch=C)`` and the
                              sum of ``channel(layer, c, batch=i)`` objectives.

torch-lucent 0.1.8 needs kornia <= 0.4.1 and imports IPython; it installs without
touching the project's environment with::

    pip install --no-deps --target /tmp/lucent_env torch-lucent==0.1.8 kornia==0.4.1 decorator

and this script stubs ``IPython.display`` when IPython is absent. It is a
benchmark peer only, never a dependency.
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

LAYER = "blocks.3"


def import_lucent():
    """torch-lucent's render, param and objectives modules, or None when not importable."""
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        ipython = types.ModuleType("IPython")
        ipython.display = types.ModuleType("IPython.display")
        sys.modules.setdefault("IPython", ipython)
        sys.modules.setdefault("IPython.display", ipython.display)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lucent.optvis import objectives, param, render, transform
    except Exception as e:  # pragma: no cover - depends on the machine
        print(
            f"torch-lucent not available ({type(e).__name__}: {e}); comparing with the plain loop"
        )
        return None
    return types.SimpleNamespace(
        render=render, param=param, objectives=objectives, transform=transform
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=3)
    parser.add_argument("--channels", type=int, default=16, help="channels to render")
    parser.add_argument("--steps", type=int, default=32, help="optimisation steps per render")
    parser.add_argument("--no-lucent", action="store_true", help="skip torch-lucent")
    parser.add_argument(
        "--quality",
        action="store_true",
        help="instead of timing, print the quality numbers of docs/featurevis.md",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead of timing, print the settings table of docs/featurevis.md",
    )
    args = parser.parse_args(argv)
    if args.quality:
        return quality()
    if args.sweep:
        return sweep()

    import torch

    cl = common.import_cnnlens()
    from cnnlens import featurevis as fv

    model = cl.load_model()
    net = model.net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    info = common.machine_info()
    lucent = None if args.no_lucent else import_lucent()
    if lucent is not None:
        from importlib.metadata import version

        info["torch_lucent"] = version("torch-lucent")
    common.print_machine(info)
    chans = list(range(args.channels))
    steps = args.steps
    print(f"model: {model.name}, layer {LAYER}, channels 0-{chans[-1]}, {steps} steps, 128 px")

    def batched():
        return fv.render(model, [f"{LAYER}:{c}" for c in chans], steps=steps, seed=0)

    def batched_full():
        objs = [fv.channel(LAYER, c) + 0 * fv.class_logit(0) for c in chans]
        return fv.render(model, objs, steps=steps, seed=0)

    def one_at_a_time():
        return [fv.render(model, [f"{LAYER}:{c}"], steps=steps, seed=c) for c in chans]

    module = dict(net.named_modules())[LAYER]
    store: dict = {}

    def keep(mod, inputs, output):
        store["a"] = output

    def plain_loop():
        out = []
        for c in chans:
            g = torch.Generator().manual_seed(c)
            p = fv.fourier(1, 128, generator=g)
            opt = torch.optim.Adam(p.params, lr=0.05)
            tf = fv.standard()
            handle = module.register_forward_hook(keep)
            try:
                for _ in range(steps):
                    net((tf(p(), g) - 0.5) / 0.5)
                    loss = -store["a"][0, c].mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            finally:
                handle.remove()
            out.append(p().detach())
        return out

    contenders = [
        Contender("cnnlens batched", batched),
        Contender("cnnlens batched, full", batched_full),
        Contender("cnnlens one at a time", one_at_a_time),
        Contender("plain loop", plain_loop),
    ]
    if lucent is not None:
        # lucent hooks every module and never removes the hooks: give it its own copy
        lnet = copy.deepcopy(net)
        lname = LAYER.replace(".", "_")
        tfs = list(lucent.transform.standard_transforms) + [lambda x: (x - 0.5) / 0.5]
        opts = dict(
            thresholds=(steps,),
            show_image=False,
            progress=False,
            preprocess=False,
            transforms=tfs,
            fixed_image_size=128,
        )

        def lucent_one():
            res = []
            for c in chans:
                torch.manual_seed(c)
                res.append(lucent.render.render_vis(lnet, f"{lname}:{c}", **opts))
            return res

        def lucent_batched():
            torch.manual_seed(0)
            obj = sum(lucent.objectives.channel(lname, c, batch=i) for i, c in enumerate(chans))
            return lucent.render.render_vis(
                lnet, obj, param_f=lambda: lucent.param.image(128, batch=len(chans)), **opts
            )

        contenders += [
            Contender("lucent one at a time", lucent_one),
            Contender("lucent batched", lucent_batched),
        ]

    # Same work, same quality? The channel objective on each contender's final images.
    objs = [f"{LAYER}:{c}" for c in chans]
    scores = {"cnnlens batched": fv.evaluate(model, objs, batched()).mean().item()}
    scores["plain loop"] = fv.evaluate(model, objs, torch.cat(plain_loop())).mean().item()
    if lucent is not None:
        imgs = torch.cat([torch.from_numpy(r[-1]).permute(0, 3, 1, 2) for r in lucent_one()])
        scores["lucent one at a time"] = fv.evaluate(model, objs, imgs).mean().item()
    print("mean channel activation on the final images (untransformed):")
    for name, v in scores.items():
        print(f"  {name:<24} {v:.2f}")

    print(f"\n{args.warmup} warm-up + {args.repeats} interleaved rounds")
    timings = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
    common.print_table(timings, reference="cnnlens batched", title="whole run (all channels)")
    n = len(chans)
    print(f"\ntime per rendered channel ({steps} steps; x {512 / steps:g} for the default 512):")
    per_channel = {}
    for name, t in timings.items():
        per_channel[name] = t.median / n
        ratio = t.median / timings["cnnlens batched"].median
        print(f"  {name:<24} {common.format_seconds(t.median / n):>10}   {ratio:5.2f}x batched")
    peer = "lucent one at a time" if lucent is not None else "plain loop"
    speedup = common.ratio(timings, peer, "cnnlens batched")
    print(f"\n{peer} / cnnlens batched = {speedup:.2f}")
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "featurevis",
                "machine": info,
                "config": {"layer": LAYER, "channels": n, "steps": steps, "size": 128},
                "timings": {k: v.as_dict() for k, v in timings.items()},
                "seconds_per_channel": per_channel,
                "peer": peer,
                "peer_over_batched": speedup,
                "mean_objective": scores,
            },
        )
    return 0


CLASSES = [1, 9, 130, 285, 309, 417, 430, 508, 949, 963]


SWEEP = [
    ("default (fourier, decorrelated, lr 0.05)", {}),
    ("lr 0.02", {"lr": 0.02}),
    ("lr 0.1", {"lr": 0.1}),
    ("pixel", {"param": "pixel"}),
    ("fourier, not decorrelated", {"decorrelate": False}),
    ("no transforms", {"transforms": "none"}),
    ("dense (generator), Adam", {"param": "dense"}),
    ("network input upsampled to 224", {"input_size": 224}),
]


def sweep(layer: str = LAYER, steps: int = 128) -> int:
    """Channels 0-15 of ``layer`` under each setting of :data:`SWEEP`: clean objective,
    objective under 4 fresh random standard transforms, diagonal hits, seconds."""
    import json

    import torch

    cl = common.import_cnnlens()
    from cnnlens import featurevis as fv

    model = cl.load_model()
    common.print_machine(common.machine_info())
    objs = [f"{layer}:{c}" for c in range(16)]
    print(f"{layer}, channels 0-15, {steps} steps, seed 0")
    for label, cfg in SWEEP:
        d = fv.dream(model, objs, steps=steps, seed=0, **cfg)
        clean = fv.evaluate(model, objs, d.images).mean().item()
        g = torch.Generator().manual_seed(123)
        moved = [fv.evaluate(model, objs, fv.standard()(d.images, g)) for _ in range(4)]
        robust = torch.stack(moved).mean().item()
        m = fv.channel_means(model, d.images, layer)[:, :16]
        hits = int((m.argmax(dim=0) == torch.arange(16)).sum())
        print(
            f"| {label} {json.dumps(cfg)} | {clean:.1f} | {robust:.1f} | {hits}/16 "
            f"| {d.seconds:.0f} |",
            flush=True,
        )
    return 0


def objective_gains(model, fv) -> None:
    """Mean gain of every kind of objective over 24 steps at 64 px, seeds 0-2 (as the test)."""
    import torch

    g = torch.Generator().manual_seed(0)
    objs = [
        fv.channel(LAYER, 5),
        fv.neuron(LAYER, 11),
        fv.deepdream("blocks.2"),
        fv.class_logit(285),
        fv.class_prob(949),
        fv.direction(LAYER, torch.randn(80, generator=g)),
        fv.channel("blocks.1", 3) + 0.5 * fv.diversity("blocks.1"),
        fv.channel(LAYER, 20) - 20 * fv.total_variation() - 5 * fv.l1() - 50 * fv.blur(),
    ]
    kw = dict(size=64, images_per_objective=2)
    rows = []
    for seed in (0, 1, 2):
        start = fv.render(model, objs, steps=0, seed=seed, **kw)
        final = fv.render(model, objs, steps=24, seed=seed, **kw)
        before = fv.evaluate(model, objs, start, images_per_objective=2).view(-1, 2).mean(1)
        after = fv.evaluate(model, objs, final, images_per_objective=2).view(-1, 2).mean(1)
        rows.append(torch.stack([before, after]))
    mean = torch.stack(rows).mean(dim=0)
    print("\nobjective on the start -> final image (24 steps, 64 px, mean of seeds 0-2):")
    for o, b, a in zip(objs, mean[0].tolist(), mean[1].tolist()):
        print(f"  {o.description}: {b:.4g} -> {a:.4g}")


def quality() -> int:
    """The numbers behind tests/featurevis/test_featurevis_quality.py, at its settings and at 512 steps."""
    import torch
    import torch.nn.functional as F

    cl = common.import_cnnlens()
    from cnnlens import featurevis as fv

    model = cl.load_model()
    common.print_machine(common.machine_info())
    objective_gains(model, fv)
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(16, 3, 128, 128, generator=g)
    n = fv.channel_means(model, noise, LAYER)[:, :16]
    objs = [f"{LAYER}:{c}" for c in range(16)]
    for steps in (96, 512):
        d = fv.dream(model, objs, steps=steps, seed=0)
        m = fv.channel_means(model, d.images, LAYER)[:, :16]
        own = m.diagonal()
        hits = int((m.argmax(dim=0) == torch.arange(16)).sum())
        off = m.clone().fill_diagonal_(float("-inf")).max(dim=0).values
        margin = (own - n.mean(dim=0)) / n.std(dim=0)
        print(f"\nspecificity, {LAYER} channels 0-15, {steps} steps ({d.seconds:.0f} s):")
        print(f"  diagonal is the column maximum for {hits}/16 channels")
        print(f"  own activation: min {own.min():.1f}, median {own.median():.1f}")
        print(f"  best other dream on the channel: median {off.median():.1f}")
        print(
            f"  noise: mean |a| {n.abs().mean():.2f}; margin in noise std: min {margin.min():.1f}"
        )
        print(f"  own / max |noise|: min {(own / n.abs().max(dim=0).values).min():.1f}")
    for steps in (64, 512):
        d = fv.dream(model, [f"logits:{k}" for k in CLASSES], steps=steps, seed=0)
        p = fv.evaluate(model, [fv.class_prob(k) for k in CLASSES], d.images)
        up = F.interpolate(d.images, size=(224, 224), mode="bilinear")
        p224 = fv.evaluate(model, [fv.class_prob(k) for k in CLASSES], up)
        print(f"\nclass dreams, {steps} steps ({d.seconds:.0f} s): p at 128 px (as rendered)")
        print("  " + ", ".join(f"{k}: {v:.3f}" for k, v in zip(CLASSES, p.tolist())))
        print(f"  {int((p > 0.5).sum())}/10 with p > 0.5; upsampled to 224 px:")
        print("  " + ", ".join(f"{k}: {v:.3f}" for k, v in zip(CLASSES, p224.tolist())))
        print(f"  {int((p224 > 0.5).sum())}/10 with p > 0.5 at 224 px")
        tg = torch.Generator().manual_seed(7)
        moved = [fv.standard()(d.images, tg) for _ in range(4)]
        pt = torch.stack(
            [fv.evaluate(model, [fv.class_prob(k) for k in CLASSES], x) for x in moved]
        )
        pt = pt.mean(dim=0)
        print("  under fresh random standard transforms (mean p of 4 draws):")
        print("  " + ", ".join(f"{k}: {v:.3f}" for k, v in zip(CLASSES, pt.tolist())))
        print(f"  {int((pt > 0.5).sum())}/10 with mean p > 0.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
