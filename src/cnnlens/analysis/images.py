"""One image file per item, decoded and preprocessed for feature extraction.

Shared by the local index run (:mod:`.index`) and the Ray actors (:mod:`.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.errors import ImageError
from ..io import DEFAULT_MAX_PIXELS, load_image
from ..models.base import Preprocess


class ImageFiles(Dataset):
    """Loads and preprocesses one image; unreadable files give zeros and the reason.

    Images above ``max_pixels`` pixels count as unreadable (see :func:`cnnlens.io.load_image`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        spec: Preprocess,
        thumb: int,
        offset: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.paths, self.spec, self.thumb, self.offset = paths, spec, thumb, offset
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        size = self.spec.crop
        try:
            img = self.spec.geometry(load_image(self.paths[i], self.max_pixels))
            x = self.spec.to_tensor(img)
            th = np.asarray(img.resize((self.thumb, self.thumb), Image.BILINEAR), np.uint8)
            err = ""
        except ImageError as e:
            x = torch.zeros(3, size, size)
            th = np.zeros((self.thumb, self.thumb, 3), np.uint8)
            err = e.reason
        return x, torch.from_numpy(th.copy()), self.offset + i, err
