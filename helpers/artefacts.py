"""Artefact stress test: does a pen mark, a ruler or a hair change what the model says?

Dermoscopic photos in real use carry things that have nothing to do with the lesion: a surgeon's
gentian-violet ink ring around it, a millimetre ruler, hairs, a colour cast from another camera,
a shaky hand. A model that learned "ink ring = the dermatologist was worried = melanoma" (Winkler
et al., JAMA Dermatology 2019: surgical ink raised a CNN's melanoma scores and its false-positive
rate on benign naevi by about 40%) is reacting to the photographer, not the skin.

Each function here takes a ``uint8`` RGB image of any size and returns a copy with one synthetic
artefact, sized relative to the image; :data:`ARTEFACTS` names them and :func:`stress_test` runs
a model on clean and altered copies of the same images and measures what changed. The artefacts
are drawn, not photographed: they show *whether* the model is sensitive, not how much a real
marker would move it. Educational tool only: nothing here is a diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

GENTIAN_VIOLET = (88, 40, 140)
"""The purple of a surgical skin marker (gentian violet)."""


def ink_marks(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dashed purple ink ring around the image centre (where the lesion usually is), and
    two dots, like a surgeon's excision marking."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    h, w = rgb.shape[:2]
    cy, cx = h / 2 + rng.normal(0, 0.03 * h), w / 2 + rng.normal(0, 0.03 * w)
    ry, rx = 0.36 * h, 0.36 * w
    width = max(2, int(0.018 * min(h, w)))
    start = rng.uniform(0, 360)
    for k in range(10):  # dashes of about 24 degrees
        a0 = start + 36 * k
        draw.arc([cx - rx, cy - ry, cx + rx, cy + ry], a0, a0 + 24, fill=GENTIAN_VIOLET,
                 width=width)
    for _ in range(2):
        angle = rng.uniform(0, 2 * np.pi)
        py, px = cy + 1.15 * ry * np.sin(angle), cx + 1.15 * rx * np.cos(angle)
        r = 1.5 * width
        draw.ellipse([px - r, py - r, px + r, py + r], fill=GENTIAN_VIOLET)
    return np.asarray(image)


def ruler(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white millimetre ruler with black ticks along the bottom or top edge."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    h, w = rgb.shape[:2]
    band = max(6, int(0.12 * h))
    top = h - band if rng.random() < 0.5 else 0
    draw.rectangle([0, top, w, top + band], fill=(236, 236, 228))
    step = max(3, w // 60)
    for i, x in enumerate(range(step // 2, w, step)):
        length = band * (0.7 if i % 10 == 0 else 0.45 if i % 5 == 0 else 0.25)
        y0, y1 = (top, top + length) if top == 0 else (top + band - length, top + band)
        draw.line([x, y0, x, y1], fill=(20, 20, 20), width=max(1, step // 4))
    return np.asarray(image)


def hair(rgb: np.ndarray, rng: np.random.Generator, *, count: int = 12) -> np.ndarray:
    """Dark, thin, gently curved hairs across the image."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    h, w = rgb.shape[:2]
    width = max(1, int(0.006 * min(h, w)))
    for _ in range(count):
        p0 = rng.uniform([0, 0], [w, h])
        p2 = rng.uniform([0, 0], [w, h])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * min(h, w), 2)
        t = np.linspace(0, 1, 30)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        shade = int(rng.uniform(15, 60))
        draw.line([tuple(p) for p in curve], fill=(shade, shade * 3 // 4, shade // 2),
                  width=width)
    return np.asarray(image)


def colour_cast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A warm (yellow-red) or cool (blue) cast, as from another camera's white balance."""
    gains = np.array([1.12, 1.02, 0.82]) if rng.random() < 0.5 else np.array([0.85, 0.98, 1.15])
    return np.clip(rgb.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An out-of-focus photo: a Gaussian blur of 1.5% of the longer side."""
    radius = max(1.0, 0.015 * max(rgb.shape[:2]))
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


ARTEFACTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "ink marks": ink_marks,
    "ruler": ruler,
    "hair": hair,
    "colour cast": colour_cast,
    "blur": blur,
}
"""Artefact name -> function ``(uint8 RGB, rng) -> uint8 RGB``."""


def apply_all(images: Sequence[np.ndarray], *, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """``{"clean": images, artefact: altered copies}``; each artefact has its own seeded
    generator, so adding an artefact never changes another's drawings."""
    out = {"clean": list(images)}
    for k, (name, fn) in enumerate(ARTEFACTS.items()):
        rng = np.random.default_rng([seed, k])
        out[name] = [fn(np.asarray(image, dtype=np.uint8), rng) for image in images]
    return out


def predict_altered(paths: Sequence[str], image_size: tuple[int, int],
                    predict: Callable[[np.ndarray], object], *, seed: int = 0,
                    chunk: int = 64) -> dict[str, list]:
    """Run ``predict`` on clean and altered copies of every image, a chunk at a time.

    Each image is read at full size, altered there (artefacts are drawn at the photo's own
    resolution), then resized to ``image_size`` as the prediction command does. ``predict``
    takes a float32 batch ``(n, H, W, 3)`` RGB 0-255; its results are collected per chunk in
    ``{"clean": [...], artefact: [...]}`` (concatenate them with the caller's type). One seeded
    generator per artefact, so the drawings do not depend on ``chunk``.
    """
    from helpers.images import read_image
    from helpers.predict import resize

    rngs = {name: np.random.default_rng([seed, k]) for k, name in enumerate(ARTEFACTS)}
    out: dict[str, list] = {"clean": [], **{name: [] for name in ARTEFACTS}}
    for start in range(0, len(paths), chunk):
        originals = [read_image(p) for p in paths[start:start + chunk]]
        out["clean"].append(predict(np.stack([resize(o, image_size) for o in originals])))
        for name, fn in ARTEFACTS.items():
            altered = [resize(fn(o, rngs[name]), image_size) for o in originals]
            out[name].append(predict(np.stack(altered)))
    return out


def stress_test(probs: dict[str, np.ndarray], y_true, classes: Sequence[str], *,
                malignant_flag: Callable[[np.ndarray], np.ndarray] | None = None,
                accepted: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """What each artefact changed, against the clean images (``probs["clean"]``).

    ``probs`` maps "clean" and each artefact to ``(N, K)`` probabilities of the same images in
    the same order. Columns: balanced accuracy, the share of images whose predicted class
    changed, the mean change of p(mel), the share of benign naevi (``nv``) called melanoma
    and, with ``malignant_flag`` (the referral rule), the share of naevi given the malignant
    advice; with ``accepted`` (the out-of-distribution gate), the share it still accepts.
    """
    from helpers import metrics

    y_true = np.asarray(y_true)
    classes = list(classes)
    mel, nv = classes.index("mel"), classes.index("nv")
    clean = np.asarray(probs["clean"])
    naevi = y_true == nv
    rows = {}
    for name, p in probs.items():
        p = np.asarray(p)
        row = {"balanced accuracy": metrics.balanced_accuracy(y_true, p),
               "prediction changed": float((p.argmax(1) != clean.argmax(1)).mean()),
               "mean change of p(mel)": float((p[:, mel] - clean[:, mel]).mean()),
               "naevi called melanoma": (float((p[naevi].argmax(1) == mel).mean())
                                         if naevi.any() else np.nan)}
        if malignant_flag is not None:
            row["naevi given the malignant advice"] = (float(malignant_flag(p[naevi]).mean())
                                                       if naevi.any() else np.nan)
        if accepted is not None and name in accepted:
            row["accepted by the gate"] = float(np.mean(accepted[name]))
        rows[name] = row
    table = pd.DataFrame(rows).T
    table.index.name = "images"
    table.insert(0, "n", len(y_true))
    table.attrs["naevi"] = int(naevi.sum())
    return table
