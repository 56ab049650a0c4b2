"""Comparing candidate models fairly: validation to choose, test to report, paired intervals.

Chapter 09 compares models that differ in one thing (a metadata input, the loss, an ensemble).
:func:`score_table` gives every candidate's validation balanced accuracy (one view and the
4-flip mean) and its test metrics with lesion-grouped bootstrap intervals, and marks the one
validation chooses. :func:`paired_difference` gives the interval of a *difference* between two
models on the same test images: each bootstrap round draws one set of lesions and scores both
models on it, which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import metrics

VIEWS = ("one view", "4 flips")


def _views(probs: np.ndarray) -> dict[str, np.ndarray]:
    """``(views, N, K)`` -> ``{"one view": first view, "4 flips": mean of all views}``."""
    probs = np.asarray(probs)
    if probs.ndim == 2:
        probs = probs[None]
    return {"one view": probs[0], "4 flips": probs.mean(axis=0)}


def score_table(candidates: Mapping[str, Mapping[str, np.ndarray]], y: Mapping[str, np.ndarray],
                test_groups: Sequence, *, rounds: int, seed: int = 42) -> pd.DataFrame:
    """One row per candidate: validation balanced accuracy per view, the view and candidate
    validation chooses, and test balanced accuracy and macro ROC-AUC with 95% intervals (in
    the chosen view).

    ``candidates``: name -> ``{"val": probs, "test": probs}``, each ``(views, N, K)`` (or
    ``(N, K)`` for one view); ``y``: ``{"val": labels, "test": labels}``.
    """
    rows = []
    for name, probs in candidates.items():
        val = {v: metrics.balanced_accuracy(y["val"], p) for v, p in _views(probs["val"]).items()}
        view = "4 flips" if np.asarray(probs["val"]).ndim == 3 and len(probs["val"]) > 1 and \
            val["4 flips"] > val["one view"] else "one view"
        test = metrics.bootstrap_table(
            y["test"], _views(probs["test"])[view], rounds=rounds, seed=seed, groups=test_groups,
            metrics={"balanced_accuracy": metrics.balanced_accuracy,
                     "macro_auc": metrics.macro_auc})
        rows.append({"model": name, "val bal. acc., 1 view": val["one view"],
                     "val bal. acc., 4 flips": val["4 flips"], "view (chosen on val)": view,
                     "val_score": val[view],
                     "test bal. acc. [95% CI]": metrics.format_ci(test.loc["balanced_accuracy"]),
                     "test ROC-AUC [95% CI]": metrics.format_ci(test.loc["macro_auc"]),
                     "test_balanced_accuracy": float(test.loc["balanced_accuracy", "estimate"])})
    table = pd.DataFrame(rows).set_index("model")
    table["chosen on val"] = np.where(table.index == table["val_score"].idxmax(), "yes", "")
    return table.drop(columns="val_score")


def paired_difference(y_true: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, *,
                      groups: Sequence, rounds: int, seed: int = 42,
                      metric: Callable = metrics.balanced_accuracy) -> dict[str, float]:
    """``metric(a) - metric(b)`` on the same images, with a lesion-grouped paired bootstrap
    95% interval (``{"estimate", "low", "high", "rounds_used"}``)."""
    proba_a, proba_b = np.asarray(proba_a), np.asarray(proba_b)
    if proba_a.shape != proba_b.shape:
        raise ValueError(f"the two models scored different shapes {proba_a.shape} and "
                         f"{proba_b.shape}: the same images, in the same order, are needed")
    k = proba_a.shape[1]

    def difference(y, both):
        return metric(y, both[:, :k]) - metric(y, both[:, k:])

    both = np.concatenate([proba_a, proba_b], axis=1)
    return metrics.bootstrap(difference, y_true, both, rounds=rounds, seed=seed, groups=groups)


def per_class_recall(y_true: np.ndarray, probas: Mapping[str, np.ndarray],
                     classes: Sequence[str]) -> pd.DataFrame:
    """Recall of every class (rows) for every model (columns), with the class sizes."""
    from sklearn.metrics import recall_score

    table = pd.DataFrame({name: recall_score(y_true, np.asarray(p).argmax(axis=1),
                                             labels=range(len(classes)), average=None,
                                             zero_division=0)
                          for name, p in probas.items()}, index=list(classes))
    table["images"] = np.bincount(y_true, minlength=len(classes))
    return table
