"""Run folders: where a training run leaves its model, manifest, history, predictions and metrics.

Each run is ``<runs>/models/<task>__<backbone>__<variant>[__seed<N>]/`` (``runs`` is
``ctx.runs``) with ``model.keras``, ``manifest.json``, ``history.csv``, ``predictions.csv`` (val
and test, one view and the 4-flip mean) and ``metrics.json``. :func:`save_run` writes one
(manifest last: a folder with a manifest is complete), :func:`load_run` reads it and
:func:`find_runs` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


RUN_FILES = ("model.keras", "manifest.json", "history.csv", "predictions.csv", "metrics.json")


FLIP_PREFIX = "p4_"
"""predictions.csv columns ``p4_<class>``: the mean over the image and its three flips."""


def missing_files(path: str | Path) -> list[str]:
    """The run files (:data:`RUN_FILES`) that ``path`` lacks; empty for a complete run folder."""
    return [name for name in RUN_FILES if not (Path(path) / name).exists()]


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds every run file, i.e. its run finished and was saved."""
    return not missing_files(path)


def run_name(task: str, backbone: str, variant: str, seed_suffix: str = "") -> str:
    return f"{task}__{backbone}__{variant}{seed_suffix}"


def seed_suffix(seed: int, profile_seed: int) -> str:
    """``""`` for the profile's own seed, ``"__seed<N>"`` for the extra seeds of a seed spread."""
    return "" if seed == profile_seed else f"__seed{seed}"


def run_path(runs_root: Path, task: str, backbone: str, variant: str, suffix: str = "") -> Path:
    """``<runs>/models/<task>__<backbone>__<variant>[__seed<N>]`` (``runs_root``: ``ctx.runs``)."""
    return Path(runs_root) / "models" / run_name(task, backbone, variant, suffix)


@dataclass
class RunFolder:
    """A finished training run: its manifest, metrics, history and predictions, model on demand."""

    path: Path
    manifest: dict
    metrics: dict
    history: pd.DataFrame
    predictions: pd.DataFrame

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.manifest["image_size"])

    def load_model(self, compile: bool = False):
        """The saved Keras model (input float32 RGB 0-255 ``(None, H, W, 3)``, softmax output)."""
        import keras

        return keras.saving.load_model(self.path / "model.keras", compile=compile)

    def probabilities(self, split: str | None = None, *, flips: bool = False) -> np.ndarray:
        """Predicted probabilities (rows of ``predictions``), one view or the 4-flip mean."""
        rows = self.predictions if split is None else self.predictions[
            self.predictions["split"] == split]
        prefix = FLIP_PREFIX if flips else "p_"
        return rows[[f"{prefix}{c}" for c in self.classes]].to_numpy()


def load_run(path: str | Path) -> RunFolder:
    """Read a run folder written by this module; a missing file raises naming it.

    ``run.manifest`` (dict), ``run.metrics`` (dict), ``run.history`` and ``run.predictions``
    (DataFrames; ``predictions`` has image_id, split, label, p_<class>...), ``run.load_model()``.
    """
    path = Path(path)
    missing = missing_files(path)
    if missing:
        raise FileNotFoundError(f"{path} is not a complete run folder: missing {missing}. "
                                f"Run chapter 03 (helpers.training) to make it.")
    manifest = json.loads((path / "manifest.json").read_text())
    predictions = pd.read_csv(path / "predictions.csv", dtype={"image_id": str})
    predictions["label"] = pd.Categorical(predictions["label"], categories=manifest["classes"])
    return RunFolder(path=path, manifest=manifest,
                     metrics=json.loads((path / "metrics.json").read_text()),
                     history=pd.read_csv(path / "history.csv"), predictions=predictions)


def find_runs(runs_root: str | Path, *, task: str | None = None, backbone: str | None = None,
              variant: str | None = None) -> list[Path]:
    """Complete run folders under ``<runs_root>/models`` matching the given fields, sorted."""
    found = []
    for manifest in sorted((Path(runs_root) / "models").glob("*/manifest.json")):
        folder = manifest.parent
        if not is_complete(folder):
            continue
        m = json.loads(manifest.read_text())
        if ((task is None or m["task"] == task) and (backbone is None or m["backbone"] == backbone)
                and (variant is None or m["variant"] == variant)):
            found.append(folder)
    return found


def runs_table(runs_root: str | Path, **filters) -> pd.DataFrame:
    """One row per run: task, backbone, variant, weights, test metrics, wall time.

    The "(4 flips)" columns score the mean prediction over each test image and its three flips
    (test-time augmentation, :func:`predict_images` with ``flips=True``); the others one view.
    """
    rows = []
    for folder in find_runs(runs_root, **filters):
        run = load_run(folder)
        m, test = run.manifest, run.metrics.get("test", {})
        flips = run.metrics.get("test_flips", {})
        rows.append({"run": folder.name, "task": m["task"], "backbone": m["backbone"],
                     "variant": m["variant"], "weights": m["weights"]["source"],
                     "image size": "x".join(map(str, m["image_size"])),
                     "epochs": m["epochs"].get("finetune", 0) + m["epochs"].get("head", 0),
                     "balanced accuracy": test.get("balanced_accuracy"),
                     "ROC-AUC": test.get("roc_auc"),
                     "balanced accuracy (4 flips)": flips.get("balanced_accuracy"),
                     "ROC-AUC (4 flips)": flips.get("roc_auc"),
                     "wall time (s)": m["wall_time_s"]})
    return pd.DataFrame(rows)


def predictions_frame(table: pd.DataFrame, probs: np.ndarray, classes: Sequence[str],
                      flipped: np.ndarray | None = None) -> pd.DataFrame:
    """image_id, split, label, ``p_<class>`` (one view) and, given, ``p4_<class>`` (4 flips)."""
    out = pd.DataFrame({"image_id": table["image_id"].astype(str).to_numpy(),
                        "split": table["split"].to_numpy(),
                        "label": table["label"].astype(str).to_numpy()})
    for k, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, k].astype(np.float64)
    if flipped is not None:
        for k, c in enumerate(classes):
            out[f"{FLIP_PREFIX}{c}"] = flipped[:, k].astype(np.float64)
    return out


def provenance() -> dict:
    """Where a run was made: the code's git commit (``+dirty`` with uncommitted changes), the
    CPU model, cores, and the TensorFlow and Keras versions."""
    import os
    import platform
    import subprocess

    import keras
    import tensorflow as tf

    from helpers import config

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=config.REPO_ROOT, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", "helpers", "book"):
        commit += "+dirty"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"commit": commit, "cpu": cpu, "cores": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def save_run(path: Path, model, *, manifest: dict, history: pd.DataFrame,
             predictions: pd.DataFrame, metrics: dict) -> Path:
    """Write a complete run folder (model last-but-one, manifest last: a folder with a manifest
    and all files is complete)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").unlink(missing_ok=True)
    model.save(path / "model.keras", include_optimizer=False)  # what inference needs
    history.to_csv(path / "history.csv", index=False)
    predictions.to_csv(path / "predictions.csv", index=False)
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path
