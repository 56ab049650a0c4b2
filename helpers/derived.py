"""Models derived from finished runs (a metadata head, an ensemble, a distilled student).

They live in ``book/runs/<profile>/derived/<name>/``, apart from chapter 03's run folders in
``models/``: they are compared and scored like runs, but the run chapters 04-08 study and the
app serves is still chosen among ``models/`` (image-only single networks). Each folder holds
the same files as a run folder (``model.keras``, ``manifest.json``, ``history.csv``,
``predictions.csv``, ``metrics.json``), so :func:`helpers.run_folders.load_run` reads it and
:mod:`helpers.results` scores it with the same lesion bootstrap. The manifest says what the
model was derived from (``derived_from``) and what it takes as input (``inputs``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import feature_cache, run_folders, scoring, splits

FOLDER = "derived"
"""Sub-folder of a profile's runs that holds derived models."""


def run_features(run: run_folders.RunFolder, table: pd.DataFrame, *, cache_dir: Path,
                 batch_size: int = 32) -> dict[str, np.ndarray]:
    """The pooled features (layer ``features``) of ``run``'s model for every image of ``table``.

    ``{"train": (1, N, D), "val": (4, N, D), "test": (4, N, D)}``: the training images once,
    validation and test images in the four flip views of test-time augmentation (plain first).
    Cached in ``cache_dir`` under the run's name and the split's hash.
    """
    import keras

    if splits.table_hash(table) != run.manifest["split_hash"]:
        raise ValueError(f"{run.path.name} was trained on another split; run chapter 03 again")
    table = table.reset_index(drop=True)
    key = f"{run.path.name}__{run.manifest['split_hash'][:12]}__run_features.npz"

    def compute():
        model = run.load_model()
        pooled = keras.Model(model.input, model.get_layer("features").output)
        out = {}
        for part in splits.PARTS:
            rows = table[table["split"] == part].reset_index(drop=True)
            out[part] = scoring.predict_images(pooled, rows, run.classes, run.image_size,
                                               batch_size=batch_size, flips=part != "train",
                                               per_view=True)
        return out

    return feature_cache.cached_arrays(Path(cache_dir) / key, compute,
                                       what=f"features of {run.path.name}")


def save(folder: Path, model, *, base: dict, variant: str, inputs: str, derived_from: list[str],
         parts: dict[str, pd.DataFrame], probs: dict[str, np.ndarray],
         flipped: dict[str, np.ndarray], history: pd.DataFrame, how: str,
         wall_time_s: float) -> Path:
    """Write a derived model's folder (see the module docstring) and return it.

    ``base``: the manifest of the run it starts from (task, classes, image size, split...);
    ``probs``/``flipped``: one-view and 4-flip probabilities for ``parts`` (val and test).
    """
    classes = list(base["classes"])
    pred, scores = scoring.score_parts(parts, probs, flipped, classes)
    manifest = {**base, "variant": variant, "derived": True, "inputs": inputs,
                "derived_from": list(dict.fromkeys(derived_from)), "how": how,
                "provenance": run_folders.provenance(),
                "wall_time_s": round(float(wall_time_s), 1),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    scores.update({k: manifest.get(k) for k in ("task", "backbone", "variant", "image_size",
                                                "profile", "split_hash", "wall_time_s")})
    return run_folders.save_run(Path(folder), model, manifest=manifest, history=history,
                                predictions=pred, metrics=scores)


def path(runs_root: Path, task: str, name: str) -> Path:
    """``<runs_root>/derived/<task>__<name>``."""
    return Path(runs_root) / FOLDER / f"{task}__{name}"


def find(runs_root: Path, task: str | None = None) -> list[Path]:
    """Complete derived model folders under ``<runs_root>/derived``, sorted."""
    found = []
    for manifest in sorted((Path(runs_root) / FOLDER).glob("*/manifest.json")):
        folder = manifest.parent
        if run_folders.is_complete(folder) and (
                task is None or json.loads(manifest.read_text())["task"] == task):
            found.append(folder)
    return found
