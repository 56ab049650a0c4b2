"""Figures for evaluating models: confusion heatmaps, ROC and precision-recall curves,
reliability diagrams, side-by-side comparisons and distance histograms.

Every function returns a matplotlib ``Figure`` (save it with ``ctx.savefig``); none calls
``plt.show``. Inputs are plain arrays as in :mod:`helpers.metrics` (``y_true`` class indices,
``proba`` an ``(N, K)`` probability array). Other chapters may add their own plot functions here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn import metrics as skm

from helpers import metrics


def confusion_heatmaps(y_true, y_pred, classes: Sequence[str], *, title: str = ""):
    """Two heatmaps side by side: raw counts, and rows normalised to 1 (diagonal = recall).

    Counts show where most images go (dominated by the big class); the normalised view shows
    how each class fares, which is what matters for the rare, dangerous ones.
    """
    counts = metrics.confusion(y_true, y_pred, classes)
    rates = metrics.confusion(y_true, y_pred, classes, normalize=True)
    size = max(4.0, 0.75 * len(classes) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axes[0],
                annot_kws={"size": 8})
    axes[0].set_title("counts")
    sns.heatmap(rates, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False,
                ax=axes[1], annot_kws={"size": 8})
    axes[1].set_title("row-normalised (diagonal = recall)")
    for ax in axes:
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _one_vs_rest(y_true, proba, classes):
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=float)
    for k, name in enumerate(classes):
        positive = y_true == k
        if positive.any() and (~positive).any():
            yield name, positive, proba[:, k]


def roc_curves(y_true, proba, classes: Sequence[str], *, title: str = "ROC, one class vs rest",
               highlight: str | None = None):
    """One-vs-rest ROC curve per class (classes absent from ``y_true`` are skipped)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, positive, score in _one_vs_rest(y_true, proba, classes):
        fpr, tpr, _ = skm.roc_curve(positive, score)
        auc = skm.roc_auc_score(positive, score)
        ax.plot(fpr, tpr, lw=2.5 if name == highlight else 1.2,
                label=f"{name} (AUC {auc:.2f}, n={positive.sum()})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def pr_curves(y_true, proba, classes: Sequence[str], *,
              title: str = "Precision-recall, one class vs rest", highlight: str | None = None):
    """One-vs-rest precision-recall curve per class, with each class's prevalence as baseline.

    For a rare class the PR curve is the honest view: a ROC curve can look fine while most
    positive calls are wrong.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, positive, score in _one_vs_rest(y_true, proba, classes):
        precision, recall, _ = skm.precision_recall_curve(positive, score)
        ap = skm.average_precision_score(positive, score)
        line, = ax.plot(recall, precision, lw=2.5 if name == highlight else 1.2,
                        label=f"{name} (AP {ap:.2f}, prevalence {positive.mean():.2f})")
        ax.axhline(positive.mean(), color=line.get_color(), ls=":", lw=0.8)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title, xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def binary_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "ROC",
               specificity: float | None = None):
    """ROC curves of a positive class, one per entry ``name -> (y_positive, score)``.

    Each entry may come from a different test set (e.g. HAM10000 vs melanoma10k). With
    ``specificity``, a vertical line marks the operating point ``1 - specificity`` and each
    curve's sensitivity there is given in the legend.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (positive, score) in curves.items():
        positive = np.asarray(positive, dtype=bool)
        fpr, tpr, _ = skm.roc_curve(positive, score)
        label = f"{name} (AUC {skm.roc_auc_score(positive, score):.2f}"
        if specificity is not None:
            sens, _ = metrics.sensitivity_at_specificity(positive, score, specificity)
            label += f", sens. {sens:.2f}"
        ax.plot(fpr, tpr, label=label + ")")
    if specificity is not None:
        ax.axvline(1 - specificity, color="grey", ls=":", lw=1,
                   label=f"specificity {specificity:.0%}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="sensitivity", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def reliability_diagram(y_true, probas: Mapping[str, np.ndarray], *, n_bins: int = 10,
                        title: str = "Reliability diagram (top-label)"):
    """Accuracy against confidence per bin for one or more sets of probabilities.

    Points on the diagonal are calibrated; below it the model is over-confident. A small
    histogram underneath shows how many predictions fall in each bin.
    """
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    for name, proba in probas.items():
        table = metrics.reliability_table(y_true, proba, n_bins)
        ece = metrics.expected_calibration_error(y_true, proba, n_bins)
        ax.plot(table["confidence"], table["accuracy"], marker="o", label=f"{name} (ECE {ece:.3f})")
        hist.hist(np.asarray(proba).max(axis=1), bins=np.linspace(0, 1, n_bins + 1), alpha=0.5,
                  label=name)
    ax.set(ylabel="accuracy in bin", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="upper left")
    hist.set(xlabel="confidence (probability of the predicted class)", ylabel="images")
    fig.tight_layout()
    return fig


def metric_comparison(table: pd.DataFrame, metric: str, *, label: str = "model",
                      low: str | None = None, high: str | None = None,
                      references: Mapping[str, float] | None = None, title: str = ""):
    """Horizontal bars of ``metric`` per row of ``table`` (``label`` column names the rows).

    ``low``/``high`` name confidence-interval columns (drawn as error bars); ``references``
    draws labelled vertical lines (e.g. a published result, a majority-class baseline).
    """
    data = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(data) + 1.6))
    y = np.arange(len(data))
    values = data[metric].to_numpy(dtype=float)
    xerr = None
    if low and high:
        xerr = np.vstack([values - data[low].to_numpy(float), data[high].to_numpy(float) - values])
        xerr = np.clip(np.nan_to_num(xerr), 0, None)
    ax.barh(y, values, xerr=xerr, color=sns.color_palette()[0], alpha=0.8, capsize=3)
    ax.set_yticks(y, data[label].astype(str))
    ax.invert_yaxis()
    for name, value in (references or {}).items():
        ax.axvline(value, ls="--", lw=1, color="black")
        ax.text(value, 0.01, f" {name}", transform=ax.get_xaxis_transform(), rotation=90,
                fontsize=8, va="bottom", ha="right")
    ax.set(xlabel=metric.replace("_", " "), xlim=(0, 1), title=title)
    fig.tight_layout()
    return fig


def distance_histogram(groups: Mapping[str, np.ndarray], *, threshold: float | None = None,
                       title: str = "Signature distances", bins: int = 80):
    """Histograms of signature distances for several groups (log counts), with the threshold."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    all_values = np.concatenate([np.asarray(v, dtype=float) for v in groups.values()])
    edges = np.linspace(0, max(all_values.max(), threshold or 0) * 1.02, bins + 1)
    for name, values in groups.items():
        ax.hist(values, bins=edges, alpha=0.6, label=f"{name} (n={len(values)})")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set(xlabel="distance between 16x16 signatures", ylabel="images (log scale)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(batch: np.ndarray, *, columns: int, titles: Sequence[str] | None = None,
               suptitle: str = ""):
    """Show images ``(N, H, W, 3)`` in 0-1, ``columns`` per row, each with its title."""
    rows = int(np.ceil(len(batch) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.0 * rows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(batch):
        ax = axes.flat[i]
        ax.imshow(np.clip(image, 0, 1))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def image_pairs(pairs: Sequence[tuple[str, str]], *, titles: Sequence[str] | None = None,
                size: tuple[int, int] = (150, 150), suptitle: str = ""):
    """Show pairs of image files side by side (one pair per column, two rows)."""
    from PIL import Image

    n = len(pairs)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for j, (left, right) in enumerate(pairs):
        for i, path in enumerate((left, right)):
            with Image.open(path) as image:
                axes[i, j].imshow(image.convert("RGB").resize(size))
            axes[i, j].axis("off")
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
