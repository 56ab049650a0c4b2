"""Scoring a model: probabilities for a sample table (one view or 4 flips) and the metrics of each
split (balanced accuracy, accuracy, macro ROC-AUC)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import images, splits
from helpers.run_folders import RunFolder, load_run, predictions_frame


def split_metrics(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    """Balanced accuracy, accuracy and ROC-AUC (macro one-vs-rest; plain AUC for 2 classes)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    out = {"n": int(len(labels)),
           "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
           "accuracy": float((pred == labels).mean())}
    present = np.unique(labels)
    try:
        if n_classes == 2:
            out["roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            aucs = [roc_auc_score(labels == k, probs[:, k]) for k in present]
            out["roc_auc"] = float(np.mean(aucs))
            if len(present) < n_classes:
                out["roc_auc_note"] = f"macro over the {len(present)} classes present"
    except ValueError:  # a single class present (tiny smoke splits)
        out["roc_auc"] = None
    return out


def label_indices(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    mapping = {c: i for i, c in enumerate(classes)}
    return table["label"].astype(str).map(mapping).to_numpy(dtype=np.int64)


def predict_images(model, table: pd.DataFrame, classes: Sequence[str], image_size, *,
                   batch_size: int = 32, flips: bool = False,
                   per_view: bool = False) -> np.ndarray:
    """Probabilities of ``model`` for every row of ``table``, in row order.

    With ``flips`` (test-time augmentation), the mean over the image and its horizontal,
    vertical and double flips: dermoscopy has no "up", so all four are the same lesion.
    With ``per_view`` the views are returned separately, ``(views, N, classes)``, the plain
    image first.
    """
    import tensorflow as tf

    ds = images.make_dataset(table, classes, image_size, batch_size=batch_size, training=False,
                             cache=bool(flips))

    def view(axes: list[int]):
        @tf.autograph.experimental.do_not_convert
        def flip(x, y):
            return tf.reverse(x, axes) if axes else x
        return flip

    views = [[], [2], [1], [1, 2]] if flips else [[]]  # axes of (batch, height, width, rgb)
    out = np.stack([np.asarray(model.predict(ds.map(view(a)), verbose=0)) for a in views])
    return out if per_view else out.mean(axis=0)


def predict_views(model, table: pd.DataFrame, classes: Sequence[str], image_size, *,
                  batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One-view probabilities and the 4-flip mean (test-time augmentation) of every row."""
    views = predict_images(model, table, classes, image_size, batch_size=batch_size,
                           flips=True, per_view=True)
    return views[0], views.mean(axis=0)


def score_parts(parts: dict[str, pd.DataFrame], probs: dict, flipped: dict,
                classes: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """The predictions table (one view and 4 flips) and the metrics of each part.

    Metrics keys: ``val``, ``test`` (one view), ``val_flips``, ``test_flips`` (4-flip mean).
    """
    pred = pd.concat([predictions_frame(parts[p], probs[p], classes, flipped[p]) for p in parts],
                     ignore_index=True)
    metrics = {}
    for p in parts:
        y = label_indices(parts[p], classes)
        metrics[p] = split_metrics(y, probs[p], len(classes))
        metrics[f"{p}_flips"] = split_metrics(y, flipped[p], len(classes))
    return pred, metrics


def repredict(path: str | Path, table: pd.DataFrame, *, batch_size: int = 32) -> RunFolder:
    """Recompute a run's predictions.csv and metrics.json from its saved model and the images.

    ``table`` is the run's sample table with its ``split`` column (same split hash).
    """
    run = load_run(path)
    if splits.table_hash(table) != run.manifest["split_hash"]:
        raise ValueError(f"{path} was trained on another table/split; cannot repredict")
    model = run.load_model()
    table = table.reset_index(drop=True)
    parts = {p: table[table["split"] == p].reset_index(drop=True) for p in ("val", "test")}
    probs, flipped = {}, {}
    for p in parts:
        probs[p], flipped[p] = predict_views(model, parts[p], run.classes, run.image_size,
                                             batch_size=batch_size)
    pred, scores = score_parts(parts, probs, flipped, run.classes)
    metrics = {**run.metrics, **scores}
    pred.to_csv(Path(path) / "predictions.csv", index=False)
    (Path(path) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return load_run(path)
