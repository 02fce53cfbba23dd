"""Where benchmark suites get their model and data: the planted dataset, or VOC/COCO on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import CnnlensError
from ..models.base import LoadedModel
from .suite import Split, Suite


def benchmark_params() -> dict:
    """Method settings every benchmark suite uses: RISE centred.

    Mass-based metrics (relevance mass, energy localisation, the cue share) read zero
    as "no evidence". RISE's map E[f | pixel visible] carries the mean score E[f] on
    every pixel, which would count as evidence spread evenly over the image; centred,
    the map keeps its ranking (pointing, deletion and insertion are unchanged) and
    loses that floor.
    """
    return {"rise": {"centre": True}}


def planted_params(size: int) -> dict:
    """Method settings for planted images of side ``size``.

    An occlusion window about the size of an object (``size / 8``: 16 px at
    128, as 32 px is at 224), and fewer RISE masks and extremal steps than the
    defaults so that ``--methods all`` stays within minutes on a CPU; RISE
    centred as in every suite (:func:`benchmark_params`). They are recorded in
    every table.
    """
    window = max(4, size // 8)
    params = benchmark_params()
    params["occlusion"] = {"window": window, "stride": window // 2}
    params["rise"]["masks"] = 1000
    params["extremal"] = {"iterations": 300}
    return params


def planted_split(model: LoadedModel, data, name: str) -> Split:
    """A :class:`Split` from a planted dataset: targets are the true labels."""
    raws = [data.raw(i) for i in range(len(data))]
    images = torch.from_numpy(np.stack([r["image"] for r in raws])).permute(0, 3, 1, 2)
    images = images.float().div(255.0)
    masks = torch.from_numpy(np.stack([r["mask"] for r in raws]))
    return Split(
        name,
        model.preprocess_spec.normalize(images),
        torch.tensor([r["label"] for r in raws]),
        masks,
        [list(r["boxes"]) for r in raws],
        torch.tensor([bool(r["difficult"]) for r in raws]),
        torch.from_numpy(np.stack([r["cue_mask"] for r in raws])),
        torch.tensor([-1 if r["cue"] is None else r["cue"] for r in raws]),
    )


def planted_suite(
    n_images: int = 100,
    n_val: int = 50,
    n_cue: int = 60,
    *,
    spec=None,
    confound: str | None = "corner",
    seed: int = 0,
    train: dict | None = None,
) -> Suite:
    """The planted-evidence suite: the cached clean classifier on ``n_images`` test images.

    Args:
        n_images: test images scored by every metric.
        n_val: validation images (choose the localisation thresholds).
        n_cue: test images of the confounded variant for the spurious-cue score.
        spec: :class:`cnnlens.datasets.PlantedSpec` (default: its defaults, ``seed``).
        confound: the cue the confounded model is trained with (``"corner"``;
            None skips the spurious-cue columns).
        seed: dataset seed when ``spec`` is not given.
        train: keyword arguments for :func:`cnnlens.datasets.train_planted`.

    Trained weights are cached (see :func:`cnnlens.datasets.cache_dir`), so only
    the first run trains.
    """
    from .. import datasets

    spec = spec or datasets.PlantedSpec(seed=seed)
    train = dict(train or {})
    model = datasets.train_planted(spec, None, **train)
    test = planted_split(model, datasets.planted("test", n_images, spec=spec), "test")
    val = planted_split(model, datasets.planted("val", n_val, spec=spec), "val")
    spurious = None
    if confound is not None:
        confounded = datasets.train_planted(spec, confound, **train)
        cue_data = datasets.planted("test", n_cue, spec=spec, confound=confound)
        spurious = (confounded, planted_split(confounded, cue_data, "cue"))
    settings = {
        "dataset": "planted",
        "spec": spec.key(),
        "n_test": n_images,
        "n_val": n_val,
        "n_cue": n_cue if confound else 0,
        "confound": confound,
        "train": train,
        "model": model.name,
    }
    return Suite("planted", model, test, val, spurious, settings, planted_params(spec.size))


def annotation_split(
    model: LoadedModel, annotations, name: str, image_root: Path, basename: bool = False
) -> Split:
    """One item per (image, class present) from VOC/COCO annotations, at the model's input size.

    Images are resized (not cropped) to the model's input side so no object is
    cut; boxes are scaled with them. Classes are matched to the model's class
    names; an annotation class the model does not know is skipped. Image files
    are ``image_root / image_path`` (``image_root / name`` with ``basename``, for
    VOC files whose path starts with the dataset's folder name). An item is
    *difficult* as in Zhang et al.'s pointing game: the class's boxes cover less
    than a quarter of the image and another class is present (a distractor).
    """
    from ..datasets import box_masks

    side = model.preprocess_spec.crop
    index = {c: i for i, c in enumerate(model.class_names)}
    xs, targets, masks, boxes, difficult = [], [], [], [], []
    for ann in annotations:
        labels = sorted({o.label for o in ann.objects if o.label in index})
        if not labels:
            continue
        path = Path(ann.image_path)
        if basename:
            path = image_root / path.name
        elif not path.is_absolute():
            path = image_root / path
        img = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
        x = model.preprocess_spec.to_tensor(img)
        sx, sy = side / ann.width, side / ann.height
        for label in labels:
            objs = [o for o in ann.objects if o.label == label]
            xs.append(x)
            targets.append(index[label])
            masks.append(box_masks(ann, label, size=(side, side)))
            boxes.append(
                [
                    (
                        round(o.box[0] * sx),
                        round(o.box[1] * sy),
                        round(o.box[2] * sx),
                        round(o.box[3] * sy),
                    )
                    for o in objs
                ]
            )
            others = any(o.label != label for o in ann.objects)
            small = float(masks[-1].float().mean()) < 0.25
            difficult.append(others and small)
    if not xs:
        raise CnnlensError(
            "no annotated object has a class the model knows; the model's class names must "
            f"match the annotation labels (model has {model.class_names[:5]}...)"
        )
    return Split(
        name,
        torch.stack(xs),
        torch.tensor(targets),
        torch.stack(masks),
        boxes,
        torch.tensor(difficult),
    )


def voc_suite(
    root: str | Path, model: LoadedModel, *, image_set: str = "test", n_images: int | None = None
) -> Suite:
    """Pascal VOC: ``root`` holds ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.

    Pointing game protocol as in TorchRay's table: one item per image and class
    present, tolerance 15 px (at 224, scaled), mean over classes, "all" and
    "difficult" subsets. ``model`` must be a VOC classifier whose class names
    are the VOC class names.
    """
    from ..datasets import read_voc

    root = Path(root)
    ids_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
    if ids_file.exists():
        ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
        xmls = [root / "Annotations" / f"{i}.xml" for i in ids]
    else:
        xmls = sorted((root / "Annotations").glob("*.xml"))
    if n_images is not None:
        xmls = xmls[:n_images]
    if not xmls:
        raise CnnlensError(f"no VOC annotations found under {root / 'Annotations'}")
    anns = [a for p in xmls for a in read_voc(p)]
    split = annotation_split(model, anns, "test", root / "JPEGImages", basename=True)
    settings = {
        "dataset": "voc",
        "root": str(root),
        "image_set": image_set,
        "n_test": len(split),
        "model": model.name,
    }
    return Suite("voc", model, split, None, None, settings, benchmark_params())


def coco_suite(
    annotations: str | Path, images: str | Path, model: LoadedModel, *, n_images: int | None = None
) -> Suite:
    """COCO: an instances JSON and its image folder; same protocol as :func:`voc_suite`."""
    from ..datasets import read_coco

    anns = read_coco(annotations)
    if n_images is not None:
        anns = anns[:n_images]
    split = annotation_split(model, anns, "test", Path(images))
    settings = {
        "dataset": "coco",
        "annotations": str(annotations),
        "n_test": len(split),
        "model": model.name,
    }
    return Suite("coco", model, split, None, None, settings, benchmark_params())


__all__ = ["annotation_split", "coco_suite", "planted_split", "planted_suite", "voc_suite"]
