"""Explain many image files with many methods and write one report.

This is the engine behind ``cnnlens explain``; it is also usable from Python.
A file that cannot be read, or a method that fails on an image, is recorded in
``errors`` and everything else is still explained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .core import progress
from .core.errors import CnnlensError, ImageError, MethodError
from .core.explanation import Explanation
from .io import DEFAULT_MAX_PIXELS, list_images, load_image, sample_images
from .methods import attribute, get_method, method_names
from .models.base import LoadedModel, Prediction
from .report import build_report


@dataclass
class ExplainRun:
    """What :func:`explain_files` produced."""

    names: list[str]
    predictions: Prediction | None
    explanations: list[Explanation]
    errors: list[dict] = field(default_factory=list)
    report_path: Path | None = None
    interrupted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether at least one map was computed."""
        return any(torch.isfinite(e.maps).any() for e in self.explanations)

    def error_groups(self) -> list[dict]:
        """The failures grouped by (method, message), in the order first seen.

        A wrong option (e.g. a ``layer`` CAM cannot use) fails the same way on every
        image; grouping lets a front end say it once. ``errors`` keeps one record per image.

        Returns:
            One dict per distinct failure: ``method`` (None for an unreadable file),
            ``error`` (the message) and ``images`` (the names it happened on, in order).
        """
        groups: dict[tuple, dict] = {}
        for err in self.errors:
            key = (err["method"], err["error"])
            group = groups.setdefault(key, {"method": key[0], "error": key[1], "images": []})
            group["images"].append(err["image"])
        return list(groups.values())


def resolve_methods(methods: str | Sequence[str] | None) -> list[str]:
    """``"all"``, a comma-separated string, or a list of names -> validated names."""
    if methods is None:
        return ["gradient", "cam", "gradcam", "occlusion"]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not methods:
        raise MethodError(
            "no method given; name one or more (e.g. --methods gradcam,occlusion), or 'all'; "
            "`cnnlens methods` lists them"
        )
    if list(methods) == ["all"]:
        return method_names()
    for m in methods:
        get_method(m)  # raises with suggestions
    return list(methods)


def gather_images(
    inputs: Sequence[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[str], list, list[dict]]:
    """Load the images behind files/folders; bundled samples when ``inputs`` is empty.

    Raises:
        NoImagesError: only folders were given and none holds an image.
    """
    if not inputs:
        samples = sample_images()
        return list(samples), list(samples.values()), []
    names, images, errors = [], [], []
    for path in list_images(inputs):
        try:
            images.append(load_image(path, max_pixels))
            names.append(str(path))
        except ImageError as e:
            errors.append({"image": str(path), "method": None, "error": e.reason})
    return names, images, errors


def explain_files(
    model: LoadedModel,
    inputs: Sequence[str | Path] = (),
    *,
    methods: str | Sequence[str] | None = None,
    target=None,
    out_dir: str | Path | None = "cnnlens-report",
    method_params: dict[str, dict] | None = None,
    title: str = "cnnlens report",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ExplainRun:
    """Explain every readable image in ``inputs`` with every method, then write a report.

    Args:
        model: the loaded model.
        inputs: image files and folders (recursive); empty means the bundled samples.
        methods: method names, ``"all"``, or None for the default four.
        target: target specification applied to each image (see :mod:`cnnlens.core.targets`).
        out_dir: report folder; None skips writing.
        method_params: extra parameters per method name, e.g. ``{"occlusion": {"stride": 16}}``.
        title: report title.
        max_pixels: images with more pixels are refused unread (decompression bombs).

    Returns:
        An :class:`ExplainRun` with per-method explanations over all readable images.
        Maps of an image on which a method failed are NaN, and the error is recorded.
        On Ctrl-C (KeyboardInterrupt) the methods that finished are still reported and
        the others are listed in ``interrupted``.

    Raises:
        NoImagesError: only folders were given and none holds an image.
    """
    names, images, errors = gather_images(inputs, max_pixels)
    chosen = resolve_methods(methods)
    # keyed by registered name, so parameters given under an alias reach the method
    # however it was chosen ("perturbation" or "meaningful_perturbation" or "all")
    by_name = {get_method(k).name: v for k, v in (method_params or {}).items()}
    run = ExplainRun(names=names, predictions=None, explanations=[], errors=errors)
    if not images:
        return run
    x = model.preprocess(images)
    run.predictions = model.predict(x, top_k=5)
    finished: list[str] = []
    try:
        _explain_all(model, x, names, chosen, target, by_name, run, finished)
    except KeyboardInterrupt:  # Ctrl-C: keep the methods that finished, report them
        run.interrupted = [m for m in chosen if m not in finished]
        run.errors = [e for e in run.errors if e["method"] not in run.interrupted]
    if out_dir is not None and (run.explanations or not run.interrupted):
        run.report_path = build_report(
            run.explanations,
            out_dir,
            model=model,
            images=model.display_images(x),
            names=names,
            predictions=run.predictions,
            errors=run.errors,
            title=title,
        )
    return run


def _explain_all(model, x, names, chosen, target, by_name, run: ExplainRun, finished) -> None:
    """Every method on every image, appending to ``run`` and ``finished`` as each ends."""
    with progress.task("images x methods", len(names) * len(chosen)) as advance:
        for method in chosen:
            parts, failures = [], 0
            for i, name in enumerate(names):
                try:
                    parts.append(
                        attribute(
                            model,
                            x[i : i + 1],
                            method,
                            target=target,
                            **by_name.get(get_method(method).name, {}),
                        )
                    )
                except (CnnlensError, ValueError, RuntimeError, TypeError) as e:
                    failures += 1
                    run.errors.append({"image": name, "method": method, "error": str(e)})
                    parts.append(None)
                advance(1)
            finished.append(method)
            if failures < len(names):
                run.explanations.append(_join(parts, x))


def _join(parts: list[Explanation | None], x: torch.Tensor) -> Explanation:
    """Concatenate per-image explanations; failed images get NaN maps of the same shape."""
    good = next(p for p in parts if p is not None)
    filled = []
    for i, p in enumerate(parts):
        if p is None:
            p = Explanation(
                maps=torch.full_like(good.maps, math.nan),
                targets=torch.full_like(good.targets, -1),
                method=good.method,
                params=good.params,
                signed=good.signed,
                inputs=x[i : i + 1],
            )
        filled.append(p)
    return Explanation.cat(filled)
