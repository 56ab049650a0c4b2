"""Cached inputs: a frozen backbone's pooled features (for the head) or lower-part maps (for
top-block fine-tuning), computed once per split and image size and saved as ``.npz``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import backbones as bb
from helpers import images


def _weights_tag(info: bb.WeightsInfo) -> str:
    return "none" if info.source == "none" else (info.sha256 or "imagenet")[:12]


def cache_key(task: str, backbone: str, info: bb.WeightsInfo, image_size, assign_hash: str) -> str:
    """The name stem of a backbone's cached features or maps for one split and image size."""
    return (f"{task}__{backbone}__{_weights_tag(info)}__{image_size[0]}x{image_size[1]}__"
            f"{assign_hash}")


def extractor(model, backbone: str, *, level: str = "features"):
    """Part of ``model`` computing cached inputs: ``"features"`` (pooled) or ``"split"`` (maps).

    ``"split"`` ends at the backbone's ``split_layer``: the frozen lower part when only its top
    blocks are trained.
    """
    import keras

    if level == "features":
        return keras.Model(model.input, model.get_layer("features").output)
    net = bb.backbone_of(model)
    bottom = keras.Model(net.input, bb.split_tensor(net, backbone))
    x = model.input
    for layer in model.layers:
        if layer.name.startswith("preprocess"):
            x = layer(x)
    return keras.Model(model.input, bottom(x), name=f"{backbone}_bottom")


def top_model(model, backbone: str, *, until: str = "head"):
    """The trainable upper part: split-layer maps -> probabilities, sharing ``model``'s layers.

    ``until="features"`` stops at the pooled features (for the frozen head).
    """
    import keras

    net = bb.backbone_of(model)
    top = keras.Model(bb.split_tensor(net, backbone), net.output)
    inputs = keras.Input(top.input_shape[1:], name="split_maps")
    x = top(inputs)
    for name in ("features", "dropout", "head"):
        x = model.get_layer(name)(x)
        if name == until:
            break
    return keras.Model(inputs, x, name=f"{backbone}_top")


def cached_arrays(cache_file: Path, compute, *, what: str) -> dict[str, np.ndarray]:
    """Load ``cache_file`` (.npz) if present, else ``compute()`` the dict of arrays and save it."""
    if cache_file.exists():
        with np.load(cache_file) as data:
            print(f"{what}: loaded from cache {cache_file.name}")
            return {k: data[k] for k in data.files}
    tick = time.perf_counter()
    arrays = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cache_file)
    print(f"{what}: computed in {time.perf_counter() - tick:.0f} s, cached in {cache_file.name}")
    return arrays


def compute_outputs(part, table: pd.DataFrame, classes, image_size, *, batch_size: int,
                    augment: bool = False, seed: int = 42, desc: str = "features",
                    dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """Run ``part`` over every image of ``table`` in row order (augmented when asked).

    The outputs are written batch by batch into one array (``out`` when given, say one view
    of a larger array), so memory holds them once: the lower-part maps of a large backbone
    are gigabytes on the laptop profile."""
    ds = images.make_dataset(table, classes, image_size, batch_size=batch_size, training=False,
                             augment=augment, cache=False, seed=seed)
    start = 0
    for x, _ in tqdm(ds, total=int(np.ceil(len(table) / batch_size)), desc=desc, unit="batch",
                     leave=False):
        batch = np.asarray(part(x, training=False))
        if out is None:
            out = np.empty((len(table),) + batch.shape[1:], dtype=dtype)
        out[start:start + len(batch)] = batch
        start += len(batch)
    if out is None or start != len(out):
        raise ValueError(f"{desc}: {start} outputs for {len(table)} images")
    return out


def predict_in_chunks(model, x: np.ndarray, chunk: int = 512) -> np.ndarray:
    """``model.predict`` over ``x`` a slice at a time, so a large (float16) array is never
    converted to one tensor in full; the outputs concatenated."""
    return np.concatenate([np.asarray(model.predict(x[i:i + chunk], batch_size=64, verbose=0))
                           for i in range(0, len(x), chunk)])
