"""Build a self-contained HTML report (plus JSON and NPZ) from a set of explanations.

The page has a method-comparison grid (images x methods, one overlay each, in the
spirit of the comparison figures in saliency papers; it scrolls inside the window,
its header row and image column staying put), then one section per image with its
top predictions and every explained target of every method, side by side. All
pictures are inlined as ``data:`` URIs (JPEG, see :mod:`cnnlens.report.pictures`);
the page makes no network request. A click on a map shows it enlarged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import write_json_atomic, write_text_atomic
from ..core.explanation import Explanation
from ..models.base import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Prediction
from . import views
from .layout import page_context, render_page
from .pictures import photo
from .serialize import extras_subset, json_safe, write_maps_npz


def _method_keys(explanations: Sequence[Explanation]) -> list[str]:
    """One unique name per explanation (``gradcam``, ``gradcam-2``, ...)."""
    keys: list[str] = []
    for e in explanations:
        base = str(e.method) or "method"
        key, n = base, 2
        while key in keys:
            key, n = f"{base}-{n}", n + 1
        keys.append(key)
    return keys


def _count_images(explanations: Sequence[Explanation], images: Any, names: Any, preds: Any) -> int:
    """The number of images N, from the first source that knows it; checks the others agree."""
    counts = [len(e) for e in explanations]
    if images is not None:
        counts.append(int(images.shape[0]))
    if names is not None:
        counts.append(len(names))
    if preds is not None:
        counts.append(int(preds.indices.shape[0]))
    if counts and any(c != counts[0] for c in counts):
        raise ValueError(
            f"explanations, images, names and predictions disagree on the number of "
            f"images ({counts}); pass them for the same batch in the same order"
        )
    return counts[0] if counts else 0


def _first_inputs(explanations: Sequence[Explanation]) -> torch.Tensor | None:
    """The normalised input batch of the first explanation that kept one."""
    for e in explanations:
        if e.inputs is not None:
            return e.inputs
    return None


def _display_images(
    images: torch.Tensor | None, inputs: torch.Tensor | None, model: LoadedModel | None
) -> torch.Tensor | None:
    """Display images in [0, 1]: given ones, or the inputs de-normalised."""
    if images is not None:
        return images.detach().float().cpu()
    if inputs is None:
        return None
    if model is not None:
        return model.display_images(inputs).detach().float().cpu()
    x = inputs.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def _predictions(
    predictions: Prediction | None,
    model: LoadedModel | None,
    inputs: torch.Tensor | None,
    errors: list[dict[str, Any]],
) -> Prediction | None:
    """Given predictions, or the model's top-5 on the inputs (a failure becomes an error entry)."""
    if predictions is not None or model is None or inputs is None:
        return predictions
    try:
        return model.predict(inputs, top_k=5)
    except Exception as exc:  # the report should still render without predictions
        errors.append({"image": None, "method": None, "error": f"prediction failed: {exc}"})
        return None


def _label_fn(model: LoadedModel | None, pred_lists: list[list[dict[str, Any]]]) -> views.LabelFn:
    """``label(class_index, image_index)``: the model's class name, else one seen in predictions."""
    seen: dict[int, str] = {}
    for row in pred_lists:
        for p in row:
            seen.setdefault(int(p["index"]), str(p["label"]))

    def label(index: int, image: int) -> str:
        if model is not None:
            return model.label(index)
        return seen.get(index, f"class {index}")

    return label


def _clean_errors(errors: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Error entries as ``{image, method, error}`` with string (or ``None``) values."""
    out = []
    for err in errors or []:
        entry = {}
        for k in ("image", "method", "error"):
            v = err.get(k)
            entry[k] = None if v is None else str(v)
        out.append(entry)
    return out


def _results(
    title: str,
    model_name: str | None,
    created: str,
    names: list[str],
    pred_lists: list[list[dict[str, Any]]],
    explanations: Sequence[Explanation],
    keys: list[str],
    label: views.LabelFn,
    errors: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``results.json`` payload (see :func:`build_report`)."""
    images = []
    for i, name in enumerate(names):
        per_method = {}
        for key, e in zip(keys, explanations, strict=True):
            m = e.maps[i].detach().float().cpu()
            targets = [int(t) for t in e.targets[i].tolist()]
            per_method[key] = {
                "targets": targets,
                "target_labels": [views.target_label(e, i, j, label) for j in range(len(targets))],
                "min": float(m.min()),
                "max": float(m.max()),
                "target_min": [float(v) for v in m.flatten(1).amin(1)],
                "target_max": [float(v) for v in m.flatten(1).amax(1)],
            }
        images.append({"name": name, "predictions": pred_lists[i], "methods": per_method})
    methods = {
        key: {
            "method": e.method,
            "params": json_safe(e.params),
            "seconds": float(e.seconds),
            "signed": bool(e.signed),
            "extras": extras_subset(e.extras),
        }
        for key, e in zip(keys, explanations, strict=True)
    }
    return json_safe(
        {
            "title": title,
            "model": model_name,
            "created": created,
            "images": images,
            "methods": methods,
            "errors": errors,
        }
    )


def build_report(
    explanations: Sequence[Explanation],
    out_dir: str | Path,
    *,
    model: LoadedModel | None = None,
    images: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    predictions: Prediction | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    title: str = "cnnlens report",
    max_targets_shown: int = 5,
) -> Path:
    """Write ``report.html``, ``results.json`` and ``maps.npz`` into ``out_dir``.

    Args:
        explanations: one :class:`Explanation` per method, all for the same N images
            in the same order. May be empty (e.g. every method failed).
        out_dir: output folder, created if needed.
        model: the explained model; gives the model name, class labels, display
            images and (when ``predictions`` is None) the top-5 predictions.
        images: display images ``(N, 3, H, W)`` in [0, 1]. Default: the first
            explanation's inputs, de-normalised by ``model`` (ImageNet statistics
            without a model).
        names: N image names; default ``image 0``, ``image 1``, ...
        predictions: top-k predictions per image; computed from ``model`` if None.
        errors: ``{"image", "method", "error"}`` dicts to list in the report.
        title: page title.
        max_targets_shown: at most this many targets per image and method are drawn
            (all are saved in the JSON and NPZ files).

    Returns:
        The path of the written ``report.html``.
    """
    explanations = list(explanations)
    model = LoadedModel.wrap(model) if model is not None else None
    error_list = _clean_errors(errors)
    n = _count_images(explanations, images, names, predictions)
    inputs = _first_inputs(explanations)
    display = _display_images(images, inputs, model)
    predictions = _predictions(predictions, model, inputs, error_list)
    name_list = [str(s) for s in names] if names is not None else [f"image {i}" for i in range(n)]
    pred_lists = predictions.to_list() if predictions is not None else [[] for _ in range(n)]
    label = _label_fn(model, pred_lists)
    keys = _method_keys(explanations)
    now = datetime.now().astimezone()
    model_name = model.name if model is not None else None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = _results(
        title,
        model_name,
        now.isoformat(timespec="seconds"),
        name_list,
        pred_lists,
        explanations,
        keys,
        label,
        error_list,
    )
    write_json_atomic(out / "results.json", payload)
    write_maps_npz(
        out / "maps.npz",
        {k: e.maps for k, e in zip(keys, explanations, strict=True)},
        {k: e.targets for k, e in zip(keys, explanations, strict=True)},
    )

    photos = [photo(display[i]) for i in range(n)] if display is not None else [None] * n
    context = page_context(
        title,
        model_name,
        now,
        name_list,
        photos,
        pred_lists,
        explanations,
        keys,
        payload["methods"],
        label,
        error_list,
        max(1, int(max_targets_shown)),
        lambda batch: _display_images(None, batch, model),
    )
    html_path = out / "report.html"
    write_text_atomic(html_path, render_page(context))
    return html_path
