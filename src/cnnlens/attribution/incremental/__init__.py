"""Incremental and approximate occlusion (Krypton, Nakandala et al., SIGMOD 2019)."""

from .engine import IncrementalEngine, Patch
from .graph import UnsupportedGraph

__all__ = ["IncrementalEngine", "Patch", "UnsupportedGraph"]
