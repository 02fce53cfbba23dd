"""Incremental and approximate occlusion (Krypton, Nakandala et al., SIGMOD 2019)."""

from ...core.geometry import UnsupportedGraph
from .engine import IncrementalEngine, Patch

__all__ = ["IncrementalEngine", "Patch", "UnsupportedGraph"]
