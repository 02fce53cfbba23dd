"""Adversarial detection from saliency maps (Fong & Vedaldi 2017, sec. 5.5), end to end.

    python benchmarks/adversarial_detection.py [--images NAME,NAME,... | --folder DIR]
        [--methods perturbation,gradient,guided_backprop,gradcam,occlusion,excitation_backprop]
        [--iterations 300] [--classifiers cnn,logistic] [--folds 5] [--seed 0]
        [--epsilon 8] [--threads N] [--json out.json]

What it does, on the bundled EfficientNet-Lite0 (offline):

1. load the images and preprocess them (224 x 224, the model's normalisation);
2. attack each with untargeted iterative FGSM (basic iterative method of
   Kurakin et al.): ε = 8/255 in [0, 1] pixel space, α = 1/255,
   min(255ε + 4, 1.25 · 255ε) = 10 steps, moving away from the clean top-1
   prediction; the adversarial pixels stay within ε of the clean ones and in
   [0, 1] (:func:`cnnlens.perturbation.adversarial.ifgsm`);
3. for every method, explain the top-1 class of each clean image and of each
   adversarial image (one ``cl.attribute`` call on both, default parameters;
   ``--iterations`` sets the learned-mask method's Adam steps, 300 in the
   paper);
4. train small classifiers to tell clean maps from adversarial maps, with
   k-fold cross-validation over image pairs (an image and its twin are always
   in the same fold), and print the mean held-out accuracy ± the standard
   deviation over folds (:func:`~cnnlens.perturbation.adversarial.detection_accuracy`);
5. apply the masks learned on the adversarial images back to them (blur,
   σ0 = 10 px) and count how often the clean top-1 label comes back as top-1
   and within the top 5 (:func:`~cnnlens.perturbation.adversarial.label_recovery`),
   next to two controls: the adversarial image as it is, and blurred everywhere.

Default images: every colour image that scikit-image ships in its data folder
(``skimage.data``, no download) and :func:`cnnlens.load_image` can open, named
by file name without extension as :func:`cnnlens.sample_images` names them
(``astronaut``, ``chelsea``, ``coffee``, ``rocket``, but also ``color``,
``hubble_deep_field``, ``ihc``, ``logo``, ``motorcycle_left``, ``retina``).
Left out: grey images, images under 64 px, and ``motorcycle_right`` (the other
half of a stereo pair with ``motorcycle_left``: a near-copy in another fold
would leak). ``--folder DIR`` takes every image under ``DIR`` instead
(:func:`cnnlens.io.list_images`).

**With ten or twenty sample images the numbers are a demonstration, not a
replication of the paper's result** (an AlexNet trained on 4000 pairs and
tested on 1000 ImageNet validation images, 93.6 % for the learned masks). A
held-out fold here holds two to four maps, so one map moves a fold's accuracy
by 25-50 points; read the spread next to every mean. Use ``--folder`` with a
few hundred photographs for numbers that mean something.

``--threads`` sets ``torch.set_num_threads`` (default: PyTorch's own choice);
on a busy machine one thread per process can be several times faster.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

METHODS = ("meaningful_perturbation", "gradient", "guided_backprop", "gradcam", "occlusion",
           "excitation_backprop")  # fmt: skip
CLASSIFIERS = ("cnn", "logistic")
NEAR_DUPLICATES = frozenset({"motorcycle_right"})  # stereo twin of motorcycle_left
MIN_SIDE = 64


def _is_colour(img) -> bool:
    import numpy as np

    a = np.asarray(img, dtype=np.int16)
    return bool((a[..., 0] != a[..., 1]).any() or (a[..., 1] != a[..., 2]).any())


def skimage_images(cl) -> dict[str, Path]:
    """Name -> path of every image file in scikit-image's bundled data folder."""
    from skimage import data

    out = {}
    for path in cl.io.list_images(data.data_dir, recursive=False):
        out.setdefault(path.stem, path)
    return out


def default_images(cl) -> dict:
    """The colour images scikit-image ships, as ``{name: PIL image}`` (see the docstring)."""
    out = {}
    for name, path in skimage_images(cl).items():
        if name in NEAR_DUPLICATES:
            continue
        try:
            img = cl.load_image(path)
        except cl.ImageError:
            continue
        if min(img.size) >= MIN_SIDE and _is_colour(img):
            out[name] = img
    return out


def named_images(cl, names: list[str]) -> dict:
    """``--images``: scikit-image samples by name (any file in its data folder)."""
    files = skimage_images(cl)
    unknown = [n for n in names if n not in files]
    if unknown:
        raise SystemExit(
            f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(sorted(files))}"
        )
    return {n: cl.load_image(files[n]) for n in names}


def folder_images(cl, folder: str) -> dict:
    """``--folder``: every image under ``folder``, named by relative path."""
    root = Path(folder)
    out = {}
    for path in cl.io.list_images(root):
        out[str(path.relative_to(root)) if root.is_dir() else path.name] = cl.load_image(path)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="comma-separated scikit-image sample names")
    src.add_argument("--folder", help="use every image under this folder instead")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    p.add_argument(
        "--iterations",
        type=int,
        default=300,
        help="Adam steps of 'meaningful_perturbation' (paper: 300)",
    )
    p.add_argument("--classifiers", default=",".join(CLASSIFIERS), help="cnn and/or logistic")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (over pairs)")
    p.add_argument("--seed", type=int, default=0, help="folds, classifier initialisation, masks")
    p.add_argument("--epsilon", type=float, default=8.0, help="L∞ radius in 0-255 pixel units")
    p.add_argument("--step", type=float, default=1.0, help="I-FGSM step α in 0-255 pixel units")
    p.add_argument("--steps", type=int, default=None, help="I-FGSM steps (default Kurakin's)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cl = common.import_cnnlens()
    import cnnlens.io  # noqa: F401  (cl.io)
    from cnnlens.perturbation import MaskResult
    from cnnlens.perturbation.adversarial import (
        default_steps,
        detection_accuracy,
        ifgsm,
        label_recovery,
        to_pixels,
    )

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:  # names or aliases ("perturbation" is meaningful_perturbation)
        canonical = {m: cl.get_method(m).name for m in methods}
    except cl.MethodError as e:
        raise SystemExit(str(e)) from None
    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    if args.folder:
        images = folder_images(cl, args.folder)
    elif args.images:
        images = named_images(cl, [n.strip() for n in args.images.split(",") if n.strip()])
    else:
        images = default_images(cl)
    if len(images) < 2:
        raise SystemExit(f"need at least 2 images, got {len(images)}")

    info = common.machine_info()
    common.print_machine(info)
    model = cl.load_model()
    names = list(images)
    x = model.preprocess(list(images.values()))
    n = len(names)
    eps, step = args.epsilon / 255, args.step / 255
    steps = args.steps if args.steps is not None else default_steps(eps)
    print(f"model {model.name}; {n} images: {', '.join(names)}")

    start = time.perf_counter()
    x_adv = ifgsm(model, x, epsilon=eps, step=step, steps=steps, seed=args.seed)
    attack_s = time.perf_counter() - start
    clean_pred, adv_pred = model.predict(x, top_k=1), model.predict(x_adv, top_k=1)
    linf = float((to_pixels(model, x_adv) - to_pixels(model, x)).abs().amax()) * 255
    flipped = int((clean_pred.indices != adv_pred.indices).sum())
    print(
        f"I-FGSM: ε = {args.epsilon:g}/255, α = {args.step:g}/255, {steps} steps "
        f"({attack_s:.0f} s); max |Δpixel| = {linf:.2f}/255; top-1 changed on {flipped}/{n}"
    )
    for i, name in enumerate(names):
        print(
            f"  {name:<20} {clean_pred.labels[i][0]} ({float(clean_pred.probs[i, 0]):.2f})"
            f" -> {adv_pred.labels[i][0]} ({float(adv_pred.probs[i, 0]):.2f})"
        )

    both = torch.cat([x, x_adv])
    results: dict = {}
    recovery = None
    for method in methods:
        params = {}
        learned = canonical[method] == "meaningful_perturbation"
        if learned:
            params["iterations"] = args.iterations
            params["seed"] = args.seed
        start = time.perf_counter()
        e = cl.attribute(model, both, method, **params)
        secs = time.perf_counter() - start
        maps = e.maps[:, 0]
        row = {"seconds": secs, "params": params}
        for clf in classifiers:
            d = detection_accuracy(
                maps[:n], maps[n:], folds=args.folds, seed=args.seed, classifier=clf
            )
            row[clf] = d.to_dict()
        results[method] = row
        accs = ", ".join(f"{c} {row[c]['accuracy']:.3f} ± {row[c]['std']:.3f}" for c in classifiers)
        print(f"{method:<20} {secs:7.0f} s   detection: {accs}", flush=True)
        if learned:
            recovery = label_recovery(model, x, x_adv, MaskResult.of(e).mask[n:, :1, 0])

    head = f"{'method':<22}" + "".join(f"{c + ' acc ± sd':>22}" for c in classifiers) + "     n"
    folds_used = min(args.folds, n)
    print(f"\nClean vs adversarial detection ({folds_used}-fold CV over image pairs; "
          "mean held-out accuracy ± sd over folds; chance = 0.5)")  # fmt: skip
    print(head)
    print("-" * len(head))
    for method, row in results.items():
        cells = "".join(f"{row[c]['accuracy']:>14.3f} ± {row[c]['std']:.3f}" for c in classifiers)
        print(f"{method:<22}{cells}{n:>6}")

    payload = {
        "benchmark": "adversarial_detection",
        "machine": info,
        "config": {
            "model": model.name,
            "images": names,
            "epsilon_255": args.epsilon,
            "step_255": args.step,
            "steps": steps,
            "methods": methods,
            "iterations": args.iterations,
            "classifiers": classifiers,
            "folds": folds_used,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
        },
        "attack": {
            "seconds": attack_s,
            "max_abs_pixel_change_255": linf,
            "top1_changed": flipped,
            "clean": clean_pred.to_list(),
            "adversarial": adv_pred.to_list(),
        },
        "detection": results,
    }
    if recovery is not None:
        r, r_all = recovery.rates(), recovery.rates(only_successful=False)
        print(
            f"\nLabel recovery: the mask learned on each adversarial image applied back to it "
            f"(blur); clean top-1 label found ({r['n']} images whose attack succeeded)"
        )
        print(f"{'input':<34}{'top-1':>8}{'top-5':>8}")
        for key, label in (
            ("masked", "mask + adversarial (paper)"),
            ("adversarial", "adversarial as is (control)"),
            ("perturbed", "adversarial blurred all over"),
        ):
            print(f"{label:<34}{r[key + '_top1']:>8.3f}{r[key + '_topk']:>8.3f}")
        print(
            f"mask + adversarial still predicts the adversarial class: "
            f"{r['masked_still_adversarial']:.3f}"
        )
        print(
            f"(all {r_all['n']} images: mask + adversarial top-1 {r_all['masked_top1']:.3f}, "
            f"top-5 {r_all['masked_topk']:.3f})"
        )
        payload["label_recovery"] = recovery.to_dict()
    print("\nA demonstration on few images, not a replication of the paper's 5000-image result.")
    if args.json:
        common.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
