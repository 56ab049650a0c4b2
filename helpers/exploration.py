"""Summaries and figures for exploring a sample table (chapters 01 and 02)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from helpers.images import read_image


def class_summary(table: pd.DataFrame, names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Images per class, their share, and (optionally) the class's full name, largest first."""
    counts = table["label"].value_counts()
    out = pd.DataFrame({"images": counts, "share": (counts / counts.sum()).round(3)})
    if names:
        out.insert(0, "diagnosis", [names.get(str(c), "") for c in out.index])
    out.index.name = "label"
    return out


def images_per_lesion(table: pd.DataFrame) -> pd.DataFrame:
    """How many lesions have 1, 2, 3... images, and how many images that accounts for."""
    per_group = table.groupby("group", observed=True).size()
    out = per_group.value_counts().sort_index().rename("lesions").to_frame()
    out["images"] = out.index * out["lesions"]
    out.index.name = "images per lesion"
    return out


def majority_baseline(table: pd.DataFrame) -> dict[str, float]:
    """Accuracy and balanced accuracy of always predicting the most frequent class."""
    counts = table["label"].value_counts()
    n_classes = (counts > 0).sum()
    return {"majority class": str(counts.index[0]),
            "accuracy": round(float(counts.iloc[0] / counts.sum()), 3),
            "balanced accuracy": round(float(1 / n_classes), 3)}


def image_sizes(table: pd.DataFrame, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Width x height and colour mode of a random sample of ``n`` images, counted."""
    sample = table.sample(min(n, len(table)), random_state=seed)
    rows = []
    for path in sample["path"]:
        with Image.open(path) as image:
            rows.append({"width": image.size[0], "height": image.size[1], "mode": image.mode})
    return pd.DataFrame(rows).value_counts().rename("images").reset_index()


def montage(table: pd.DataFrame, classes: Sequence[str], per_class: int = 5, seed: int = 0,
            title: str | None = None) -> plt.Figure:
    """A grid with one row per class and ``per_class`` random example images in it."""
    fig, axes = plt.subplots(len(classes), per_class,
                             figsize=(per_class * 1.8, len(classes) * 1.5), squeeze=False)
    rng = np.random.default_rng(seed)
    for row, label in zip(axes, classes):
        paths = table.loc[table["label"] == label, "path"].to_numpy()
        chosen = rng.choice(paths, size=min(per_class, len(paths)), replace=False)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        for ax, path in zip(row, chosen):
            ax.imshow(read_image(path))
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], ncols: int = 4,
               size: float = 2.2) -> plt.Figure:
    """Show arrays (uint8, or float in 0-255) in a grid with a title under each."""
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 0.85),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
