"""Object shapes and colours of the planted-evidence dataset, and their rasteriser.

Each class of the dataset is one (colour, shape) pair, for example "red disc"
(see :func:`class_parts` for why colours and shapes are shared between classes).
A shape is a boolean test on normalised coordinates ``(u, v)`` in ``[-1, 1]``
(``u`` to the right, ``v`` downwards), so one function serves every size and
rotation. :func:`rasterise` evaluates it on a supersampled grid and returns the
fraction of each pixel the shape covers: objects get smooth edges (they look
drawn, not stamped) and the ground-truth mask is simply ``coverage >= 0.5``.

No object is a plain axis-aligned square: that is the form of the corner mark
of the confounded variant, whose colours (:data:`CUE_COLOURS`) are not object
colours either, so the mark can never be mistaken for an object.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _disc(u, v):
    return u * u + v * v <= 1.0


def _triangle(u, v):
    # Apex at the top, base at v = 0.8; the sides meet the base at |u| = 0.95.
    return (v <= 0.8) & (v >= -1.0 + 1.8 / 0.95 * np.abs(u))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5**2)


def _cross(u, v):
    arm = 0.34
    return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))


SHAPES: dict[str, ShapeFn] = {
    "disc": _disc,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
}

# Saturated object colours, far from the muted tints of the backgrounds.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.08, 0.08),
    "green": (0.10, 0.78, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.96, 0.88, 0.08),
}

# Colours of the corner mark: the saturated hues halfway between the object
# colours (orange between red and yellow, and so on), so the mark is a cue of its
# own that never looks like part of an object, and no two marks look alike.
CUE_COLOURS: dict[str, tuple[float, float, float]] = {
    "orange": (1.00, 0.50, 0.00),
    "lime": (0.50, 1.00, 0.00),
    "spring": (0.00, 1.00, 0.50),
    "cyan": (0.00, 1.00, 1.00),
    "azure": (0.00, 0.50, 1.00),
    "violet": (0.50, 0.00, 1.00),
    "magenta": (1.00, 0.00, 1.00),
    "rose": (1.00, 0.00, 0.50),
}

MAX_CLASSES = 2 * len(COLOURS)


def _n_parts(n_classes: int) -> int:
    if not 3 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be between 3 and {MAX_CLASSES}; got {n_classes}")
    return max(3, (n_classes + 1) // 2)


def class_parts(n_classes: int) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pair of each class.

    With ``k`` colours and ``k`` shapes, colour ``i`` goes with shapes ``i`` and
    ``i + 1`` (cyclically): red disc, red triangle, green triangle, green
    cross, blue cross, blue disc for six classes. Every colour and every shape
    then belongs to two classes, so neither colour nor shape alone names the
    class: a model must see the object's colour *and* its shape, which also
    makes the object harder to learn than a spurious cue (as in real data).
    """
    k = _n_parts(n_classes)
    colours, shapes = list(COLOURS)[:k], list(SHAPES)[:k]
    pairs = [(colours[i // 2], shapes[(i // 2 + i % 2) % k]) for i in range(2 * k)]
    return pairs[:n_classes]


def distractor_parts(n_classes: int) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pairs of the same colours and shapes that are no class.

    Distractors use them: a green disc beside a red disc shares the colour of
    one class and the shape of another, but is neither, so the label stays
    unambiguous while a model that looks at colour or shape alone is fooled.
    """
    k = _n_parts(n_classes)
    used = set(class_parts(n_classes))
    return [(c, s) for c in list(COLOURS)[:k] for s in list(SHAPES)[:k] if (c, s) not in used]


def rasterise(shape: str, side: int, angle: float, supersample: int = 3) -> np.ndarray:
    """Coverage of one shape drawn in a ``side x side`` box.

    Args:
        shape: a key of :data:`SHAPES`.
        side: box side in pixels.
        angle: rotation in radians (counter-clockwise on screen).
        supersample: sub-pixel samples per axis; edges get ``supersample**2`` levels.

    Returns:
        ``(side, side)`` float32 array in [0, 1]: the covered fraction of each pixel.
    """
    k = supersample
    # Sub-pixel centres mapped to [-1, 1] over the box.
    t = (np.arange(side * k, dtype=np.float32) + 0.5) / (side * k) * 2.0 - 1.0
    v, u = np.meshgrid(t, t, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    ur, vr = c * u - s * v, s * u + c * v  # rotate the sample points the other way
    inside = SHAPES[shape](ur, vr).astype(np.float32)
    return inside.reshape(side, k, side, k).mean(axis=(1, 3))
