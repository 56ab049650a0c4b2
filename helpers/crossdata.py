"""Finding the same image in two datasets, even after resizing and re-encoding.

melanoma10k was assembled from the ISIC archive, and HAM10000 is part of that archive: some
melanoma10k files are HAM10000 images resized to 300x300 and saved again as JPEG. A content
hash (SHA-256 of the file) cannot see that: every byte differs. What survives resizing and
re-compression is the coarse picture, so each image is reduced to a tiny *signature*:

1. a 32x32 grayscale thumbnail (the whole image squeezed to a square, so a 4:3 original and
   its square copy line up), cached per dataset under ``<runs>/thumbnails/``;
2. averaged down to 16x16, minus its mean (brightness shifts cancel), divided by its length
   (contrast changes cancel).

Two signatures are unit vectors, so their Euclidean distance is ``sqrt(2 - 2 cos)``: 0 for the
same picture, about 1.4 for unrelated ones. Comparing every melanoma10k image with every
HAM10000 image is one matrix product, done in chunks to keep memory small. The threshold
(:data:`DEFAULT_THRESHOLD`) is checked on real data by :func:`synthetic_copy_distances`
(known copies) and :func:`within_dataset_distances` (known different lesions).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from helpers import datasets

THUMB_SIZE = 32
"""Side of the cached grayscale thumbnails."""
SIGNATURE_SIZE = 16
"""Side of the signature compared between images (the thumbnail averaged down)."""
DEFAULT_THRESHOLD = 0.10
"""Signatures closer than this are the same picture. Chosen from measured distances (chapter 05):
the 1,113 melanoma10k copies of HAM10000 images lie at 0.004-0.037, synthetic resized and
re-encoded copies below 0.06; each HAM10000 image's nearest *other* lesion at 0.145 or more
(except one photo that HAM10000 lists under two lesion ids, at 0.049)."""


# --- thumbnails and signatures -----------------------------------------------------------------

def thumbnail(source: str | Path | bytes, size: int = THUMB_SIZE) -> np.ndarray:
    """A ``(size, size)`` uint8 grayscale thumbnail of an image file (or its bytes).

    JPEGs are decoded at a reduced scale (``draft``) that is still at least twice ``size``, then
    resized with Pillow's antialiasing filter: fast and stable under re-encoding.
    """
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.draft("L", (2 * size, 2 * size))
    image = image.convert("L").resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def thumbnails(table: pd.DataFrame, cache: str | Path | None = None, *,
               size: int = THUMB_SIZE, progress: bool = True) -> np.ndarray:
    """Thumbnails of every row of a sample table, ``(N, size, size)`` uint8, in table order.

    With ``cache`` (an ``.npz`` path) thumbnails are stored by file path and only images not yet
    in the cache are read; the cache grows as new images are asked for.
    """
    paths = table["path"].astype(str).tolist()
    known: dict[str, np.ndarray] = {}
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            if saved["thumbs"].shape[1:] == (size, size):
                known = dict(zip(saved["paths"].tolist(), saved["thumbs"]))
    todo = [p for p in dict.fromkeys(paths) if p not in known]
    for path in tqdm(todo, desc="thumbnails", unit="img", disable=not progress, leave=False):
        known[path] = thumbnail(path, size)
    if cache is not None and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        keys = list(known)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, paths=np.array(keys), thumbs=np.stack([known[k] for k in keys]))
        tmp.replace(cache)
    if not paths:
        return np.empty((0, size, size), dtype=np.uint8)
    return np.stack([known[p] for p in paths])


def signatures(thumbs: np.ndarray, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """Mean-normalised, unit-length ``size x size`` signatures ``(N, size*size)`` float32."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    n, height, width = thumbs.shape
    if height % size or width % size:
        raise ValueError(f"thumbnails of {height}x{width} cannot be averaged down to {size}x{size}")
    pooled = thumbs.reshape(n, size, height // size, size, width // size).mean(axis=(2, 4))
    flat = pooled.reshape(n, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.maximum(norms, 1e-6)).astype(np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between signatures ``a`` and ``b`` (row by row, same shape)."""
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.sum(a * b, axis=-1)))


# --- all-pairs search --------------------------------------------------------------------------

def nearest(query: np.ndarray, reference: np.ndarray, *, chunk: int = 1024
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each query signature, the index of and distance to its nearest reference signature.

    Computes ``query @ reference.T`` ``chunk`` rows at a time, so memory stays at
    ``chunk x len(reference)`` floats (8 MB per 1,000 reference images).
    """
    if len(reference) == 0:
        raise ValueError("the reference set is empty")
    index = np.empty(len(query), dtype=np.int64)
    best = np.empty(len(query), dtype=np.float64)
    reference = reference.astype(np.float64)
    for start in range(0, len(query), chunk):
        sims = query[start:start + chunk].astype(np.float64) @ reference.T
        index[start:start + chunk] = sims.argmax(axis=1)
        best[start:start + chunk] = sims.max(axis=1)
    return index, _distance(best)


def _distance(cosine: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their dot product, ``sqrt(2 - 2 cos)``.

    The dot products are float64: in float32 a rounding error of 1e-7 in ``cos`` near 1 becomes
    about 1e-3 in the distance, and which BLAS kernel runs (threads, chunk size) changes it.
    """
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cosine)).astype(np.float32)


def nearest_other_group(signs: np.ndarray, groups: Sequence, *, chunk: int = 1024
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Within one dataset: each image's nearest image from a *different* group (lesion).

    The distances are what "different lesions" look like to the detector; the threshold must
    stay below almost all of them.
    """
    codes, _ = pd.factorize(pd.Series(list(groups)))
    index = np.empty(len(signs), dtype=np.int64)
    best = np.empty(len(signs), dtype=np.float64)
    signs = signs.astype(np.float64)
    for start in range(0, len(signs), chunk):
        sims = signs[start:start + chunk] @ signs.T
        same = codes[start:start + chunk, None] == codes[None, :]
        sims[same] = -2.0
        index[start:start + chunk] = sims.argmax(axis=1)
        best[start:start + chunk] = sims.max(axis=1)
    return index, _distance(best)


def find_near_duplicates(query: pd.DataFrame, reference: pd.DataFrame, *,
                         threshold: float = DEFAULT_THRESHOLD, cache_dir: str | Path | None = None,
                         query_name: str = "query", reference_name: str = "reference",
                         progress: bool = True) -> pd.DataFrame:
    """Every query image with its nearest reference image and their distance.

    Returns one row per query image (same order): ``image_id``, ``label``, ``match_id``,
    ``match_label``, ``distance`` and ``duplicate`` (``distance < threshold``). Thumbnails are
    cached in ``cache_dir/<name>_thumbs.npz``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    q_thumbs = thumbnails(query, cache_dir / f"{query_name}_thumbs.npz" if cache_dir else None,
                          progress=progress)
    r_thumbs = thumbnails(reference,
                          cache_dir / f"{reference_name}_thumbs.npz" if cache_dir else None,
                          progress=progress)
    index, dist = nearest(signatures(q_thumbs), signatures(r_thumbs))
    ref = reference.reset_index(drop=True)
    return pd.DataFrame({
        "image_id": query["image_id"].to_numpy(),
        "label": query["label"].astype(str).to_numpy(),
        "match_id": ref["image_id"].to_numpy()[index],
        "match_label": ref["label"].astype(str).to_numpy()[index],
        "distance": dist,
        "duplicate": dist < threshold,
    })


# --- validating the threshold ------------------------------------------------------------------

def resized_copy(path: str | Path, size: tuple[int, int] = (300, 300), quality: int = 75) -> bytes:
    """The JPEG bytes of an image resized to ``size`` (W, H) and re-encoded at ``quality``.

    This is how the copies in melanoma10k were (apparently) made: a known copy to test with.
    """
    with Image.open(path) as image:
        resized = image.convert("RGB").resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def synthetic_copy_distances(table: pd.DataFrame, n: int = 200, *, seed: int = 42,
                             variants: Sequence[tuple[tuple[int, int], int]] = (
                                 ((300, 300), 90), ((300, 300), 75), ((224, 224), 50),
                                 ((600, 450), 95)),
                             ) -> pd.DataFrame:
    """Distances between ``n`` images and resized, re-encoded copies of themselves.

    Each variant is ``((width, height), JPEG quality)``. Every distance here is a true copy:
    the threshold must sit above all of them.
    """
    sample = table.sample(n=min(n, len(table)), random_state=seed)
    originals = signatures(np.stack([thumbnail(p) for p in sample["path"]]))
    rows = []
    for size, quality in variants:
        copies = signatures(np.stack([thumbnail(resized_copy(p, size, quality))
                                      for p in sample["path"]]))
        for image_id, d in zip(sample["image_id"], distance(originals, copies)):
            rows.append({"image_id": image_id, "variant": f"{size[0]}x{size[1]} q{quality}",
                         "distance": float(d)})
    return pd.DataFrame(rows)


def within_dataset_distances(table: pd.DataFrame, cache: str | Path | None = None, *,
                             progress: bool = True) -> pd.DataFrame:
    """Each image's distance to the nearest image of a *different* group in the same table."""
    signs = signatures(thumbnails(table, cache, progress=progress))
    index, dist = nearest_other_group(signs, table["group"])
    return pd.DataFrame({"image_id": table["image_id"].to_numpy(),
                         "group": table["group"].to_numpy(),
                         "match_id": table["image_id"].to_numpy()[index],
                         "match_group": table["group"].to_numpy()[index],
                         "distance": dist})


# --- scoring a model on the other dataset -------------------------------------------------------

def malignant_probability(run, table: pd.DataFrame, *, batch_size: int = 32) -> np.ndarray:
    """A run's probability of "malignant" for every image of ``table`` (any dataset).

    For a HAM10000 (seven-class) model that is ``p(mel) + p(bcc) + p(akiec)``; for a binary
    model, its ``p(malignant)``. Images are fed at the run's own image size.
    """
    from helpers import metrics, scoring

    labels = table["label"]
    classes = (list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype)
               else sorted(labels.astype(str).unique()))
    proba = scoring.predict_images(run.load_model(), table, classes, run.image_size,
                                   batch_size=batch_size)
    if "malignant" in run.classes:
        return proba[:, run.classes.index("malignant")]
    return metrics.class_score(proba, run.classes, sorted(datasets.MALIGNANT_HAM))


def external_summary(y_malignant, score, copies, *, specificity: float = 0.9) -> pd.DataFrame:
    """Binary metrics on an external set with and without the near-duplicate copies."""
    from helpers import metrics

    y_malignant = np.asarray(y_malignant, dtype=bool)
    score = np.asarray(score, dtype=float)
    copies = np.asarray(copies, dtype=bool)
    rows = {"copies excluded (honest)": metrics.binary_summary(
                y_malignant[~copies], score[~copies], specificity=specificity)}
    if copies.any():
        rows["copies included (leaky)"] = metrics.binary_summary(y_malignant, score,
                                                                 specificity=specificity)
    table = pd.DataFrame(rows).T
    for column in ("n_images", "n_positive"):
        table[column] = table[column].astype(int)
    return table
