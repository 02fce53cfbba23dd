"""Spatial geometry of a network's layers, read from ``torch.fx`` and from real shapes.

Two walkers follow space through a CNN: receptive fields
(:mod:`cnnlens.analysis.receptive`) and the projective-field bands of incremental
occlusion (:mod:`cnnlens.attribution.incremental`). What both need lives here:

* the graph: :func:`trace_graph` traces the model with ``torch.fx``, every module without
  children (and every module of a type the caller names) a leaf; a model ``torch.fx``
  cannot trace raises :class:`UnsupportedGraph`;
* a windowed layer's kernel: :func:`kernel_of` reads the kernel ``k``, stride ``s``,
  dilation ``d`` and declared padding of a convolution, max or average pooling;
* its padding, solved from the sizes it was seen mapping. Along one axis an op with
  ``k, s, d`` that maps ``n_in`` pixels to ``n_out`` needs in all (:func:`total_padding`)::

      total = (n_out - 1) * s + d * (k - 1) + 1 - n_in

  (negative: the op drops pixels at the end). The padding is the declared one when it
  explains the sizes; padding computed inside ``forward`` (TensorFlow "same", as in timm's
  ``Conv2dSame``) is split with the smaller half first, as TensorFlow does
  (:func:`same_padding`): ``(total // 2, total - total // 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import fx, nn

__all__ = [
    "Kernel",
    "LeafTracer",
    "UnsupportedGraph",
    "kernel_of",
    "output_size",
    "pair",
    "same_padding",
    "total_padding",
    "trace_graph",
]


class UnsupportedGraph(ValueError, RuntimeError):
    """A geometry walker cannot trace the model or follow one of its operations.

    Both a ``ValueError`` (as receptive fields raised it) and a ``RuntimeError`` (as the
    incremental occlusion engine raised it), so either kind of ``except`` still catches it.
    """


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of a size given as one int or as two.

    Args:
        v: ``k`` or ``(k_rows, k_cols)``.

    Returns:
        Two ints.
    """
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class LeafTracer(fx.Tracer):
    """A ``torch.fx`` tracer that stops at modules without children and at ``leaves``.

    Args:
        leaves: module types kept whole even when they have children (for example
            a batch norm subclass that holds its activation).
    """

    def __init__(self, leaves: tuple[type[nn.Module], ...] = ()):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return not any(True for _ in m.children()) or isinstance(m, self.leaves)


def trace_graph(net: nn.Module, leaves: tuple[type[nn.Module], ...] = ()) -> fx.Graph:
    """The ``torch.fx`` graph of ``net`` with :class:`LeafTracer` (``net`` is not changed).

    Args:
        net: the model.
        leaves: module types traced as one node even when they have children.

    Returns:
        The graph.

    Raises:
        UnsupportedGraph: ``torch.fx`` cannot trace the model (data-dependent control flow).
    """
    try:
        return LeafTracer(leaves).trace(net)
    except Exception as e:
        raise UnsupportedGraph(f"torch.fx cannot trace the model ({e})") from e


def total_padding(n_in: int, n_out: int, k: int, s: int, d: int) -> int:
    """Padding (before plus after) that makes a window op map ``n_in`` pixels to ``n_out``."""
    return (n_out - 1) * s + d * (k - 1) + 1 - n_in


def same_padding(total: int) -> tuple[int, int]:
    """TensorFlow "same" split of a total padding: ``(before, after)``, the smaller first."""
    return total // 2, total - total // 2


def output_size(n_in: int, k: int, s: int, d: int, before: int, after: int) -> int:
    """Output length of a window op on ``n_in`` pixels padded by ``before`` and ``after``."""
    return (n_in + before + after - d * (k - 1) - 1) // s + 1


@dataclass(frozen=True)
class Kernel:
    """A convolution's or pooling's window along (rows, cols).

    Attributes:
        op: ``"conv"``, ``"max"`` or ``"avg"``.
        k, s, d: kernel size, stride and dilation.
        padding: the declared padding per side, or ``None`` when declared as a string
            (``"same"``, ``"valid"``): then only the shapes tell.
    """

    op: str
    k: tuple[int, int]
    s: tuple[int, int]
    d: tuple[int, int]
    padding: tuple[int, int] | None

    def paddings(
        self, n_in: Sequence[int], n_out: Sequence[int]
    ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Paddings ``((top, bottom), (left, right))`` that turn size ``n_in`` into ``n_out``.

        The declared padding on the top and left comes first (the rest on the bottom and
        right), then the TensorFlow "same" split; a caller that can run the op keeps the
        first that reproduces its output.

        Args:
            n_in: ``(H, W)`` of the op's input.
            n_out: ``(h, w)`` of its output.

        Returns:
            One or two candidates, most likely first.
        """
        axes = []
        for a in range(2):
            total = total_padding(n_in[a], n_out[a], self.k[a], self.s[a], self.d[a])
            splits = [same_padding(total)]
            if self.padding is not None:
                splits.insert(0, (self.padding[a], total - self.padding[a]))
            axes.append(splits)
        return list(zip(*axes))

    def left_padding(self, n_in: Sequence[int], n_out: Sequence[int]) -> tuple[int, int]:
        """``(top, left)`` padding that explains ``n_in -> n_out``.

        The declared padding when, applied on both sides, it gives the output size; else
        the smaller half of the TensorFlow "same" total (none when the total is negative).

        Args:
            n_in: ``(H, W)`` of the op's input.
            n_out: ``(h, w)`` of its output.

        Returns:
            Padding before the first row and before the first column.
        """
        out = []
        for a in range(2):
            k, s, d, p = self.k[a], self.s[a], self.d[a], self.padding
            if p is not None and output_size(n_in[a], k, s, d, p[a], p[a]) == n_out[a]:
                out.append(p[a])
            else:
                out.append(max(total_padding(n_in[a], n_out[a], k, s, d), 0) // 2)
        return out[0], out[1]


def kernel_of(m: nn.Module) -> Kernel | None:
    """The window of a ``Conv2d``, ``MaxPool2d`` or ``AvgPool2d`` (subclasses too), else None.

    Args:
        m: a module.

    Returns:
        Its :class:`Kernel`; average pooling has dilation 1.
    """
    if isinstance(m, nn.Conv2d):
        op = "conv"
    elif isinstance(m, nn.MaxPool2d):
        op = "max"
    elif isinstance(m, nn.AvgPool2d):
        op = "avg"
    else:
        return None
    stride = m.stride if m.stride is not None else m.kernel_size
    padding = None if isinstance(m.padding, str) else pair(m.padding)
    return Kernel(op, pair(m.kernel_size), pair(stride), pair(getattr(m, "dilation", 1)), padding)
