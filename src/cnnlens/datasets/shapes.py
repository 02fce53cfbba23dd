"""Object shapes and colours of the planted-evidence dataset, and their rasteriser.

Each class of the dataset is one (colour, shape) pair, for example "red disc".
A shape is a boolean test on normalised coordinates ``(u, v)`` in ``[-1, 1]``
(``u`` to the right, ``v`` downwards), so one function serves every size and
rotation. :func:`rasterise` evaluates it on a supersampled grid and returns the
fraction of each pixel the shape covers: objects get smooth edges (they look
drawn, not stamped) and the ground-truth mask is simply ``coverage >= 0.5``.

No class uses a plain axis-aligned square: that shape is reserved for the
corner mark of the confounded variant, so the mark can never be mistaken for
an object of some class.
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


def _star(u, v):
    # Hexagram: the union of an upward and a downward triangle.
    up = (v <= 0.5) & (v >= -1.0 + 1.5 / 0.866 * np.abs(u))
    down = (v >= -0.5) & (v <= 1.0 - 1.5 / 0.866 * np.abs(u))
    return up | down


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.75**2)


def _bar(u, v):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.38)


SHAPES: dict[str, ShapeFn] = {
    "disc": _disc,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "star": _star,
    "diamond": _diamond,
    "crescent": _crescent,
    "bar": _bar,
}

# Saturated colours, far from the muted tints of the backgrounds.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.08, 0.08),
    "blue": (0.10, 0.25, 0.95),
    "green": (0.10, 0.78, 0.15),
    "yellow": (0.96, 0.88, 0.08),
    "magenta": (0.90, 0.10, 0.85),
    "cyan": (0.08, 0.85, 0.90),
    "orange": (1.00, 0.52, 0.00),
    "white": (0.97, 0.97, 0.97),
}

MAX_CLASSES = len(SHAPES)


def class_parts(n_classes: int) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pair of each class: class ``i`` gets the ``i``-th of both."""
    if not 3 <= n_classes <= MAX_CLASSES:
        raise ValueError(
            f"n_classes must be between 3 and {MAX_CLASSES} (distractors need three classes, "
            f"and there are {MAX_CLASSES} colour-shape pairs); got {n_classes}"
        )
    return list(zip(list(COLOURS)[:n_classes], list(SHAPES)[:n_classes]))


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
