"""Reading and checking images, and the tf.data pipeline every model is fed from.

Models in this book take plain RGB pixels in 0-255 (float32); each backbone's own preprocessing
is part of the model graph (see ``helpers.backbones``). So the pipeline only decodes, resizes,
caches, augments (training only), batches and prefetches.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

MIN_SIDE = 32
"""Images smaller than this on either side are rejected: too small to say anything about."""


class ImageError(ValueError):
    """An image could not be used; the message names the file and what is wrong."""


def read_image(source: str | Path | bytes | Image.Image, *, min_side: int = MIN_SIDE,
               name: str | None = None) -> np.ndarray:
    """Read an image file (or bytes, or a PIL image) as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette and RGBA images are converted to RGB (alpha is composited on white).
    A file that is missing, unreadable, not an image, truncated, or smaller than ``min_side``
    pixels raises :class:`ImageError` naming it.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    try:
        if isinstance(source, Image.Image):
            image = source
            image.load()
        else:
            handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
            with handle, Image.open(handle) as opened:
                opened.load()
                image = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
    except FileNotFoundError as err:
        raise ImageError(f"{label}: file not found.") from err
    except (IsADirectoryError, PermissionError) as err:
        raise ImageError(f"{label}: cannot be read ({type(err).__name__}).") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{label}: not an image file (JPEG or PNG expected).") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{label}: too many pixels to be a dermoscopy image ({err}).") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{label}: corrupt or truncated image ({err}).") from err
    if min(image.size) < min_side:
        raise ImageError(f"{label}: {image.size[0]}x{image.size[1]} pixels is too small; "
                         f"at least {min_side}x{min_side} is needed.")
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale 0-65535 to 0-255 (as TensorFlow's decoder does), not clip
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(array / 257), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"))


def check_images(table: pd.DataFrame, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode every image of a sample table; return ``(usable rows, problems)``.

    ``problems`` has one row per excluded image (``image_id``, ``path``, ``problem``), so a
    corrupt file is reported by name and left out instead of crashing a training run later.
    The usable rows keep the table's ``attrs``.
    """
    problems = []
    bad = np.zeros(len(table), dtype=bool)
    rows = zip(table["image_id"], table["path"])
    for i, (image_id, path) in enumerate(tqdm(rows, total=len(table), desc="check images",
                                              unit="img", disable=not progress, leave=False)):
        try:
            read_image(path)
        except ImageError as err:
            bad[i] = True
            problems.append({"image_id": image_id, "path": path, "problem": str(err)})
    problems_df = pd.DataFrame(problems, columns=["image_id", "path", "problem"])
    if len(problems_df):
        print(f"Excluded {len(problems_df)} unreadable image(s):")
        for row in problems_df.itertuples():
            print(f"  - {row.problem}")
    usable = table[~bad].reset_index(drop=True)
    usable.attrs.update(table.attrs)
    return usable, problems_df


def resize_tensor(image, image_size: tuple[int, int]):
    """The book's one resize: stretch the whole image to ``image_size`` (H, W), no crop.

    Bilinear with antialiasing (``tf.image.resize(antialias=True)``): when shrinking, every
    output pixel averages all the input pixels it covers, so a 4032x3024 phone photo and a
    600x450 dermoscope image reach the model the same way. Training, :mod:`helpers.predict`,
    the web app and the exported models' contract all use it. Returns float32 RGB 0-255.
    """
    import tensorflow as tf

    return tf.image.resize(tf.cast(image, tf.float32), image_size, antialias=True)


def resize_rgb(rgb: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """:func:`resize_tensor` of one ``(H, W, 3)`` uint8 array, as float32 NumPy, without TensorFlow.

    Pillow's bilinear filter widens with the shrink factor exactly like TensorFlow's antialiased
    triangle kernel; run on 32-bit float channels (mode ``"F"``) it gives the same pixels to
    within float round-off (``tests/test_images.py`` checks it), so the app and the ``.tflite``
    command need LiteRT and Pillow only.
    """
    height, width = image_size
    rgb = np.asarray(rgb)
    channels = [Image.fromarray(rgb[..., c].astype(np.float32), mode="F")
                .resize((width, height), Image.Resampling.BILINEAR) for c in range(3)]
    return np.stack([np.asarray(channel, dtype=np.float32) for channel in channels], axis=-1)


def load_batch(paths: Sequence[str | Path], image_size: tuple[int, int]) -> np.ndarray:
    """Read and resize images into one float32 array ``(N, H, W, 3)`` in 0-255 (for small N)."""
    height, width = image_size
    out = np.empty((len(paths), height, width, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = resize_rgb(read_image(path), image_size)
    return out


def augmenter(seed: int = 42):
    """The training-time augmentation: flips, right-angle-free rotation, zoom, colour jitter.

    Dermoscopy has no "up", so any flip or rotation is a valid new view of the same lesion;
    brightness and contrast jitter mimic different cameras and lighting.
    """
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),
        keras.layers.RandomZoom((-0.1, 0.2), fill_mode="reflect", seed=seed),
        keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(0.15, value_range=(0, 255), seed=seed),
    ], name="augment")


def decode_and_resize(path, image_size: tuple[int, int]):
    """TensorFlow op: read a JPEG/PNG file into float32 RGB 0-255 at ``image_size`` (H, W)."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    # JPEGs with the accurate integer DCT: the same pixels Pillow decodes (helpers.predict and
    # the app), where TensorFlow's default fast DCT differs by up to 3 levels per pixel.
    # dtype uint8: 16-bit PNGs are scaled to 0-255 instead of passing through as 0-65535.
    image = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False))
    image.set_shape([None, None, 3])
    return resize_tensor(image, image_size)


def make_dataset(table: pd.DataFrame, classes: Sequence[str], image_size: tuple[int, int], *,
                 batch_size: int = 32, training: bool = False, augment: bool | None = None,
                 cache: bool | str | Path = True, seed: int = 42,
                 targets: np.ndarray | None = None):
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches from a sample table.

    Decodes and resizes in parallel, caches the resized images (in memory, or in a file when
    ``cache`` is a path), then shuffles and augments when ``training``, batches and prefetches.
    Labels are integer indices into ``classes``; rows whose label is not in ``classes`` raise.
    ``targets`` (one float row per table row, e.g. a teacher's probabilities for distillation)
    replaces the labels, shuffled with their images.
    """
    import tensorflow as tf

    classes = list(classes)
    labels = table["label"].astype(str)
    unknown = set(labels) - set(classes)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in classes {classes}")
    label_idx = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int32)
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float32)
        if len(targets) != len(table):
            raise ValueError(f"targets has {len(targets)} rows for {len(table)} images")
    ds = tf.data.Dataset.from_tensor_slices((table["path"].astype(str).to_numpy(),
                                             label_idx if targets is None else targets))
    ds = ds.map(lambda p, y: (decode_and_resize(p, image_size), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    if training:
        ds = ds.shuffle(min(len(table), 4096), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training if augment is None else augment:
        layer = augmenter(seed)
        ds = ds.map(lambda x, y: (layer(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(labels: Sequence[str] | pd.Series, classes: Sequence[str]) -> dict[int, float]:
    """Keras ``class_weight``: ``n_samples / (n_classes * n_in_class)`` per class index.

    A class absent from ``labels`` gets weight 0 (nothing to weigh); rare classes weigh more, so
    the loss no longer rewards predicting ``nv`` for everything.
    """
    counts = pd.Series(list(labels)).value_counts()
    total = counts.sum()
    return {i: (float(total / (len(classes) * counts[c])) if c in counts else 0.0)
            for i, c in enumerate(classes)}
