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
from ..io import load_image
from ..models.base import Preprocess


class ImageFiles(Dataset):
    """Loads and preprocesses one image; unreadable files give zeros and the reason."""

    def __init__(self, paths: Sequence[str], spec: Preprocess, thumb: int, offset: int):
        self.paths, self.spec, self.thumb, self.offset = paths, spec, thumb, offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        size = self.spec.crop
        try:
            img = self.spec.geometry(load_image(self.paths[i]))
            x = self.spec.to_tensor(img)
            th = np.asarray(img.resize((self.thumb, self.thumb), Image.BILINEAR), np.uint8)
            err = ""
        except ImageError as e:
            x = torch.zeros(3, size, size)
            th = np.zeros((self.thumb, self.thumb, 3), np.uint8)
            err = e.reason
        return x, torch.from_numpy(th.copy()), self.offset + i, err
