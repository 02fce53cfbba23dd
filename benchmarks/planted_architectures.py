"""Pointing on planted evidence for a small ViT and a small ConvNeXt; writes
``docs/planted_architectures.md`` and ``docs/planted_architectures.json``.

    python benchmarks/planted_architectures.py [--images 100] [--archs vit,convnext]

With ``--archs`` only those networks are re-run; the others are kept from the JSON.

No pretrained ViT weights exist offline, so both networks are trained here on the
planted-evidence data (torchvision's ``VisionTransformer`` with a convolutional stem and
``ConvNeXt`` at a small size, see ``cnnlens.datasets.planted_nets``), cached like the
planted CNN (``$CNNLENS_CACHE``). On their test split the truth is known pixel by pixel,
so the pointing game grades each method; the centre and random baselines are the floor.
The ViT's Grad-CAM is also measured at every block to check the default layer.

Training runs once (then the cache serves): the ConvNeXt took 7 minutes on two quiet
cores, the ViT 24 minutes on two cores shared with tests. The maps take about 4 minutes
for the ConvNeXt and 12 for the ViT (RISE is most of it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DOCS = common.REPO_ROOT / "docs"
SIZE = 96
TRAIN = {"epochs": 20, "n_train": 8000, "progress": False}
METHODS = {
    "vit": ["gradcam", "attention_rollout", "transformer_relevance", "occlusion", "rise"],
    "convnext": ["gradcam", "gradcampp", "layercam", "occlusion", "rise"],
}
EXTRA = ["integrated_gradients", "smoothgrad", "gradient"]
# The ViT's occluder covers one 8-px patch, i.e. one token (stride half of it); the
# suite's default for 96-px images, a 12-px window, straddles patches and is reported
# as a variant.
PARAMS = {"vit": {"occlusion": {"window": 8, "stride": 4}}}
VARIANTS = {"vit": [("occlusion", {"window": 12, "stride": 6})]}


def _pointing(suite, method: str, **params) -> tuple[float, str]:
    import torch

    from cnnlens.evaluation.pointing import pointing_game
    from cnnlens.methods import attribute

    t, maps, layer = suite.test, [], ""
    for i in range(0, len(t), 25):
        e = attribute(suite.model, t.x[i : i + 25], method, t.targets[i : i + 25], **params)
        maps.append(e.maps[:, 0])
        layer = e.extras.get("layer") or ""
    pg = pointing_game(torch.cat(maps), t.masks, classes=t.targets, difficult=t.difficult)
    return pg.mean_class_accuracy, layer


def layer_sweep(suite) -> list[dict]:
    """Grad-CAM's pointing at the input of each block's first norm and at each block's
    output (the last block's output gets no gradient at the patches)."""
    net = suite.model.net
    blocks = [n for n, _ in net.named_modules() if n.count(".") == 2 and "encoder_layer_" in n]
    rows = []
    for name in blocks:
        for layer in (f"{name}.ln_1", name):
            score, _ = _pointing(suite, "gradcam", layer=layer)
            rows.append({"layer": layer, "pointing": score})
    return rows


def run_arch(arch: str, n_images: int, out: Path) -> dict:
    from cnnlens.datasets import PlantedSpec, accuracy, planted
    from cnnlens.datasets.planted_nets import DEFAULTS
    from cnnlens.evaluation import planted_suite, run_benchmark

    spec = PlantedSpec(size=SIZE)
    start = time.perf_counter()
    # the learning rate is spelled out so that the map cache's fingerprint changes with it
    train = {**TRAIN, "arch": arch, "lr": DEFAULTS[arch]["lr"]}
    suite = planted_suite(n_images, 20, 0, spec=spec, confound=None, train=train)
    trained = time.perf_counter() - start
    acc = accuracy(suite.model, planted("test", 500, spec=spec))
    methods = METHODS[arch] + EXTRA
    res = run_benchmark(suite, methods, out / arch, sanity_images=0, params=PARAMS.get(arch))
    rows = []
    for m in [*methods, "centre", "random"]:
        r = res.row(m)
        if r is None:
            continue
        keep = ("pointing", "pointing_difficult", "relevance_mass", "insertion_auc")
        rows.append(
            {"method": m, **{k: r.get(k) for k in keep}, "s_per_image": r.get("seconds_per_image")}
        )
    report = {
        "arch": arch,
        "model": suite.model.name,
        "params": sum(p.numel() for p in suite.model.net.parameters()),
        "test_accuracy": acc,
        "train": train,
        "lr": DEFAULTS[arch]["lr"],
        "train_or_load_s": round(trained, 1),
        "n_test": n_images,
        "rows": rows,
        "failures": res.failures,
    }
    report["method_params"] = PARAMS.get(arch, {})
    report["variants"] = [
        {"method": m, "params": p, "pointing": _pointing(suite, m, **p)[0]}
        for m, p in VARIANTS.get(arch, [])
    ]
    if arch == "vit":
        from cnnlens.core.layers import default_layer

        report["default_layer"] = default_layer(suite.model.net, (SIZE, SIZE))
        report["gradcam_layers"] = layer_sweep(suite)
    return report


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def page(reports: list[dict], meta: dict) -> str:
    lines = [
        "# Planted evidence on a ViT and a ConvNeXt",
        "",
        "Generated by `python benchmarks/planted_architectures.py` "
        f"({meta['date']}, torch {meta['torch']}, {meta['threads']} threads); do not edit.",
        "",
        "No pretrained ViT weights exist offline, so these networks are trained on the",
        "planted-evidence data (96 px, six colour-shape classes, 8000 images, 20 epochs),",
        "where the evidence of every test image is known pixel by pixel. Pointing is the",
        "mean per-class accuracy of the pointing game (Zhang et al. 2016, 15 px at 224 px,",
        "scaled); the centre and random rows are the floor a map must beat.",
        "",
    ]
    for r in reports:
        lines += [
            f"## {r['arch']}: {r['model']}",
            "",
            f"{r['params']:,} parameters, trained at a peak learning rate of "
            f"{r.get('lr', '?')}; test accuracy {r['test_accuracy']:.3f} (500 images); "
            f"maps on {r['n_test']} test images.",
            "",
            "| method | pointing | pointing (difficult) | relevance mass | insertion AUC "
            "| s / image |",
            "|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            lines.append(
                f"| {row['method']} | {_f(row['pointing'])} | {_f(row['pointing_difficult'])} | "
                f"{_f(row['relevance_mass'])} | {_f(row['insertion_auc'])} | "
                f"{_f(row['s_per_image'])} |"
            )
        if r.get("method_params"):
            extra = json.dumps(r["method_params"])
            lines += ["", f"Method settings beyond the suite's: `{extra}`."]
        for v in r.get("variants", []):
            lines += [
                "",
                f"{v['method']} with `{json.dumps(v['params'])}`: pointing {_f(v['pointing'])}.",
            ]
        if r.get("failures"):
            lines += ["", "Failures: " + "; ".join(map(str, r["failures"]))]
        if r.get("gradcam_layers"):
            lines += [
                "",
                "Grad-CAM by layer (the default is marked):",
                "",
                "| layer | pointing |",
                "|---|---|",
            ]
            for row in r["gradcam_layers"]:
                mark = " (default)" if row["layer"] == r.get("default_layer") else ""
                lines.append(f"| `{row['layer']}`{mark} | {_f(row['pointing'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="test images per network")
    parser.add_argument("--archs", default="vit,convnext")
    parser.add_argument("--out", type=Path, default=Path("planted-bench"), help="map cache")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    # reports of architectures not re-run are kept from the existing JSON
    path = DOCS / "planted_architectures.json"
    kept = json.loads(path.read_text())["reports"] if path.is_file() else []
    by_arch = {r["arch"]: r for r in kept}
    for arch in args.archs.split(","):
        by_arch[arch] = run_arch(arch, args.images, args.out)
        r = by_arch[arch]
        print(json.dumps({k: v for k, v in r.items() if k != "train"}, indent=1, default=str))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    reports = [by_arch[a] for a in METHODS if a in by_arch]
    path.write_text(json.dumps({"meta": meta, "reports": reports}, indent=1, default=str) + "\n")
    (DOCS / "planted_architectures.md").write_text(page(reports, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
