"""Representations over a dataset: feature index, top patches, neighbours, 2-D maps.

```python
idx = cl.analysis.build_index(model, "photos/", "photos.index", ["blocks.3", "conv_head"])
cl.analysis.top_patches(idx, "blocks.3", unit=7, k=9)        # list[Patch], strongest first
feat_nb, pix_nb = cl.analysis.nearest(idx, 0, "conv_head", k=8)
entries, xy = cl.analysis.embed_index(idx, "conv_head", "tsne", seed=0)
```
"""

from .embed import METHODS, embed, embed_index, grid_assignment, thumbnail_grid
from .index import build_index, read_label_csv
from .map_page import write_map_page
from .neighbours import (
    NeighbourMaps,
    Neighbours,
    explain_neighbours,
    nearest,
    search,
    write_neighbours_page,
)
from .patches import (
    Patch,
    input_box_to_image,
    patch_layer,
    top_patches,
    unit_strip,
    whole_image_warning,
    write_patch_pages,
)
from .receptive import (
    Field1D,
    ReceptiveField,
    UnsupportedGraph,
    analytic_field,
    gradient_field,
    receptive_field,
)
from .store import FeatureIndex, IndexFolderError, open_index

__all__ = [
    "METHODS",
    "FeatureIndex",
    "Field1D",
    "IndexFolderError",
    "Neighbours",
    "Patch",
    "ReceptiveField",
    "UnsupportedGraph",
    "analytic_field",
    "build_index",
    "embed",
    "embed_index",
    "gradient_field",
    "grid_assignment",
    "input_box_to_image",
    "nearest",
    "open_index",
    "patch_layer",
    "read_label_csv",
    "receptive_field",
    "search",
    "thumbnail_grid",
    "top_patches",
    "unit_strip",
    "whole_image_warning",
    "write_map_page",
    "write_neighbours_page",
    "explain_neighbours",
    "NeighbourMaps",
    "write_patch_pages",
]
