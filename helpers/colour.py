"""Colour constancy for dermoscopy: Shades of Gray, and a model's pooled features with or without it.

Dermatoscopes differ in their light and their camera, so one lesion photographed in two clinics
comes out in two colour casts; a model trained in one clinic reads the cast as evidence.
Shades of Gray (Finlayson and Trezzi, 2004) estimates each image's illuminant as the Minkowski
p-norm of each colour channel and divides it out, so the light becomes neutral grey. It was
part of the preprocessing of the ISIC 2018 and 2019 winners. Chapter 05 measures what it does to
the shift between HAM10000 and melanoma10k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import images


def shades_of_gray(batch: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Images ``(N, H, W, 3)`` in 0-255 with each image's illuminant made neutral grey.

    The illuminant of an image is the p-norm mean of each channel, ``(mean(I_c ** p)) ** (1/p)``
    (p = 1 is the grey-world assumption, p = infinity is max-RGB); each channel is divided by it,
    scaled so that a grey illuminant leaves the image unchanged, and clipped to 0-255.
    """
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {x.shape}")
    if p < 1:
        raise ValueError(f"p must be at least 1, got {p}")
    scaled = x / 255.0  # the p-th power of 0-255 values overflows float32 for large p
    illuminant = np.mean(scaled ** p, axis=(1, 2), keepdims=True) ** (1.0 / p)
    illuminant = illuminant / np.maximum(np.linalg.norm(illuminant, axis=-1, keepdims=True),
                                         1e-12) * np.sqrt(3.0)
    return np.clip(x / np.maximum(illuminant, 1e-6), 0.0, 255.0)


def pooled_features(model, table: pd.DataFrame, image_size: tuple[int, int], *,
                    colour_constancy: bool, batch_size: int = 64,
                    desc: str = "features") -> np.ndarray:
    """``model``'s output (e.g. the pooled features of
    :func:`helpers.feature_cache.extractor`, which takes 0-255 images) for every image of
    ``table`` in row order, read and resized with :func:`helpers.images.load_batch`, with
    :func:`shades_of_gray` first when asked. Both arms of a comparison go through this one
    reader, so they differ in the colour step only."""
    paths = list(table["path"])
    outputs = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        batch = images.load_batch(paths[start:start + batch_size], image_size)
        if colour_constancy:
            batch = shades_of_gray(batch)
        outputs.append(np.asarray(model(batch, training=False), dtype=np.float32))
    if not outputs:
        raise ValueError("no images to compute features of")
    return np.concatenate(outputs)
