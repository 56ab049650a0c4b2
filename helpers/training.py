"""Training: cached frozen features + a head, then fine-tuning, and the run folders they leave.

The recipe every backbone goes through (chapter 03)::

    frozen    the backbone's pooled features are computed ONCE and cached; a softmax head is
              trained on them (seconds instead of minutes: no image passes through the backbone
              again). Early stopping on validation balanced accuracy.
    finetune  starting from that head, the backbone is unfrozen: the whole network for small
              backbones, the top blocks for large ones (for those, the frozen lower part is
              computed once per augmented view and cached too). Batch norm trains at momentum
              0.9, AdamW with a one-epoch warm-up then cosine decay, label smoothing,
              augmentation, class weights, early stopping on validation balanced accuracy
              with a checkpoint of the best epoch.

Each variant is saved as a *run folder* (``<runs>/models/<task>__<backbone>__<variant>/``) with
``model.keras``, ``manifest.json``, ``history.csv``, ``predictions.csv`` (val and test) and
``metrics.json``. Other chapters read them with :func:`load_run`.

Command line (the laptop profile's long runs)::

    python -m helpers.training --profile laptop --task ham10000 --backbone densenet121

Several GPUs or machines: the profile's ``strategy`` (or ``--strategy``) picks a tf.distribute
strategy; :mod:`helpers.distribute` says what it changes (batch, learning rate, who writes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import backbones as bb
from helpers import datasets, distribute, images, splits
from helpers.resources import process_peak_mb

TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ham10000": ("ham10000", datasets.HAM_CLASSES),
    "melanoma10k": ("melanoma10k", datasets.BINARY_CLASSES),
}
"""Task name -> (sample-table name for ``ctx.samples``, class order of the model output)."""

RUN_FILES = ("model.keras", "manifest.json", "history.csv", "predictions.csv", "metrics.json")
FLIP_PREFIX = "p4_"
"""predictions.csv columns ``p4_<class>``: the mean over the image and its three flips."""


@dataclass(frozen=True)
class Recipe:
    """Learning rates and limits of one backbone's training (they differ: measure)."""

    head_lr: float = 1e-3
    finetune_lr: float = 3e-4
    """Peak learning rate of fine-tuning (reached after the warm-up, then cosine decay)."""
    patience: int = 4
    views: int = 3
    """Augmented views of each training image cached for top-block fine-tuning."""
    label_smoothing: float = 0.1
    bn_momentum: float | None = 0.9
    """Batch norm trains while fine-tuning, at this momentum; ``None`` keeps it frozen."""
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4


RECIPES: dict[str, Recipe] = {
    # Measured on the laptop HAM10000 split (validation balanced accuracy, see chapter 03):
    # whole-network MobileNet 0.25 learns fastest at 1e-3 with batch norm training.
    "mobilenet_025": Recipe(finetune_lr=1e-3),
    # Not tuned: half of MobileNet 0.25's rate for a network with 9x the weights.
    "mobilenet_075": Recipe(finetune_lr=5e-4),
}
"""Per-backbone changes to the default :class:`Recipe`; backbones not listed use the default."""


def recipe_for(backbone: str) -> Recipe:
    return RECIPES.get(backbone, Recipe())


def run_name(task: str, backbone: str, variant: str, seed_suffix: str = "") -> str:
    return f"{task}__{backbone}__{variant}{seed_suffix}"


def seed_suffix(seed: int, profile_seed: int) -> str:
    """``""`` for the profile's own seed, ``"__seed<N>"`` for the extra seeds of a seed spread."""
    return "" if seed == profile_seed else f"__seed{seed}"


def run_path(runs_root: Path, task: str, backbone: str, variant: str, suffix: str = "") -> Path:
    """``<runs>/models/<task>__<backbone>__<variant>[__seed<N>]`` (``runs_root`` is ``ctx.runs``)."""
    return Path(runs_root) / "models" / run_name(task, backbone, variant, suffix)


# --- reading run folders ------------------------------------------------------------------------

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
    missing = [name for name in RUN_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete run folder: missing {missing}. "
                                f"Run chapter 03 (helpers.training) to make it.")
    manifest = json.loads((path / "manifest.json").read_text())
    predictions = pd.read_csv(path / "predictions.csv", dtype={"image_id": str})
    predictions["label"] = pd.Categorical(predictions["label"], categories=manifest["classes"])
    return RunFolder(path=path, manifest=manifest,
                     metrics=json.loads((path / "metrics.json").read_text()),
                     history=pd.read_csv(path / "history.csv"), predictions=predictions)


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


def find_runs(runs_root: str | Path, *, task: str | None = None, backbone: str | None = None,
              variant: str | None = None) -> list[Path]:
    """Complete run folders under ``<runs_root>/models`` matching the given fields, sorted."""
    found = []
    for manifest in sorted((Path(runs_root) / "models").glob("*/manifest.json")):
        folder = manifest.parent
        if not all((folder / name).exists() for name in RUN_FILES):
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


# --- metrics and predictions --------------------------------------------------------------------

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


# --- callbacks ----------------------------------------------------------------------------------

def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class BestBalancedAccuracy(_keras_callback_base()):
    """Validation balanced accuracy each epoch; keep the best weights; stop when it stalls.

    Writes ``val_balanced_accuracy`` into the epoch logs and keeps every epoch's logs in
    ``log`` (the history), restores the best weights at the end. With ``checkpoint`` (a folder)
    it saves its state there after every epoch (``state.json``, best weights in ``best.npz``)
    and, if Keras' ``BackupAndRestore`` (placed *before* this callback, backup in
    ``checkpoint/backup``) resumes an interrupted fit, picks up where it stopped.
    """

    def __init__(self, val_x, val_y: np.ndarray, *, patience: int = 3,
                 checkpoint: str | Path | None = None, baseline: bool = False):
        super().__init__()
        self.val_x, self.val_y = val_x, np.asarray(val_y)
        self.patience, self.baseline = patience, baseline
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.best, self.best_epoch, self.best_weights, self.wait = -1.0, -1, None, 0
        self.log: list[dict] = []

    def _score(self) -> float:
        from sklearn.metrics import balanced_accuracy_score

        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        probs = np.asarray(self.model.predict(self.val_x, verbose=0))
        return float(balanced_accuracy_score(self.val_y, probs.argmax(axis=1)))

    def _resume(self) -> bool:
        """Load the saved state if ``BackupAndRestore`` is resuming this fit."""
        if self.checkpoint is None:
            return False
        state = self.checkpoint / "state.json"
        if not ((self.checkpoint / "backup" / "training_metadata.json").exists()
                and state.exists() and (self.checkpoint / "best.npz").exists()):
            return False
        saved = json.loads(state.read_text())
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]
        self.log = saved["log"]
        with np.load(self.checkpoint / "best.npz") as data:
            self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]
        print(f"resuming after epoch {len(self.log)} from {self.checkpoint} (best val "
              f"balanced accuracy so far {self.best:.3f})")
        return True

    def _save_state(self) -> None:
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        if self.best_weights is not None:
            tmp = self.checkpoint / "best.tmp.npz"
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            tmp.replace(self.checkpoint / "best.npz")
        state = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                 "log": self.log}
        (self.checkpoint / "state.json").write_text(json.dumps(state))

    def on_train_begin(self, logs=None):
        """With ``baseline``, the starting weights compete too (fine-tuning that never beats the
        frozen model keeps the frozen model: best epoch 0)."""
        if self._resume():
            return
        if self.baseline:
            self.best = self._score()
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            print(f"before fine-tuning: val balanced accuracy {self.best:.3f}")

    def on_epoch_end(self, epoch, logs=None):
        score = self._score()
        logs = {} if logs is None else logs
        logs["val_balanced_accuracy"] = score
        self.log.append({k: float(v) for k, v in logs.items()})
        if score > self.best:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
        if self.checkpoint:
            self._save_state()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def resumable_callbacks(best: BestBalancedAccuracy) -> list:
    """Keras' ``BackupAndRestore`` (model, optimizer and epoch after every epoch) followed by
    ``best``: an interrupted fine-tuning run resumes from its last finished epoch."""
    import keras

    if best.checkpoint is None:
        return [best]
    return [keras.callbacks.BackupAndRestore(str(best.checkpoint / "backup")), best]


class Progress(_keras_callback_base()):
    """A tqdm progress bar per epoch with the running loss, and one summary line per epoch."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs, self.bar = label, epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        self.bar = tqdm(total=steps, desc=f"{self.label} epoch {epoch + 1}/{self.epochs}",
                        unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        logs = logs or {}
        shown = ", ".join(f"{k} {float(v):.3f}" for k, v in logs.items()
                          if k in ("loss", "val_balanced_accuracy"))
        print(f"{self.label} epoch {epoch + 1}/{self.epochs}: {shown}", flush=True)


# --- feature caches -----------------------------------------------------------------------------

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
                    dtype=np.float32) -> np.ndarray:
    """Run ``part`` over every image of ``table`` in row order (augmented when asked)."""
    ds = images.make_dataset(table, classes, image_size, batch_size=batch_size, training=False,
                             augment=augment, cache=False, seed=seed)
    outs = []
    for x, _ in tqdm(ds, total=int(np.ceil(len(table) / batch_size)), desc=desc, unit="batch",
                     leave=False):
        outs.append(np.asarray(part(x, training=False)).astype(dtype))
    return np.concatenate(outs)


# --- training steps -----------------------------------------------------------------------------

def _compile(model, lr: float):
    """Adam at a constant ``lr`` and integer labels (the head on cached features)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy())


def _compile_finetune(model, recipe: Recipe, *, steps_per_epoch: int, epochs: int, loss=None):
    """AdamW with a linear warm-up to ``recipe.finetune_lr``, then cosine decay to 1% of it;
    cross-entropy on one-hot labels with ``recipe.label_smoothing`` (or ``loss``)."""
    import keras

    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    peak = recipe.finetune_lr
    schedule = keras.optimizers.schedules.CosineDecay(
        peak / 100 if warmup else peak, decay_steps=max(1, epochs * steps_per_epoch - warmup),
        alpha=0.01, warmup_target=peak if warmup else None, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
                  loss=loss or keras.losses.CategoricalCrossentropy(
                      label_smoothing=recipe.label_smoothing))


def train_head(model, features: dict, labels: dict, n_classes: int, *, epochs: int,
               class_weight: dict, lr: float = 1e-3, batch_size: int = 64, patience: int = 5,
               seed: int = 42) -> pd.DataFrame:
    """Train ``model``'s ``head`` (and dropout) on cached pooled features; return the history."""
    import keras

    keras.utils.set_random_seed(seed)
    dim = features["train"].shape[1]
    inputs = keras.Input((dim,), name="pooled_features")
    x = model.get_layer("dropout")(inputs)
    head = keras.Model(inputs, model.get_layer("head")(x), name="head_on_features")
    _compile(head, lr)
    best = BestBalancedAccuracy(features["val"], labels["val"], patience=patience)
    hist = head.fit(features["train"], labels["train"], batch_size=batch_size, epochs=epochs,
                    class_weight=class_weight, shuffle=True, verbose=0,
                    callbacks=[best, Progress("head", epochs)])
    frame = pd.DataFrame(hist.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    frame.insert(0, "stage", "head")
    print(f"head: best val balanced accuracy {best.best:.3f} at epoch {best.best_epoch + 1}")
    return frame


class _MapSequence:
    """Batches of cached feature maps: a random augmented view per image and random flips."""

    def __new__(cls, *args, **kwargs):  # subclass keras.utils.PyDataset lazily
        import keras

        class MapSequence(keras.utils.PyDataset):
            def __init__(self, maps, labels, weights, batch_size, seed, n_classes):
                super().__init__()
                self.maps, self.weights = maps, weights
                self.labels = np.eye(n_classes, dtype=np.float32)[labels]  # one-hot
                self.batch_size, self.rng = batch_size, np.random.default_rng(seed)
                self.n = maps.shape[1]
                self.on_epoch_end()

            def __len__(self):
                return int(np.ceil(self.n / self.batch_size))

            def on_epoch_end(self):
                self.order = self.rng.permutation(self.n)
                self.view = self.rng.integers(0, self.maps.shape[0], self.n)

            def __getitem__(self, i):
                idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
                x = self.maps[self.view[idx], idx].astype(np.float32)
                flip_h = self.rng.random(len(idx)) < 0.5
                flip_v = self.rng.random(len(idx)) < 0.5
                x[flip_h] = x[flip_h, :, ::-1]
                x[flip_v] = x[flip_v, ::-1]
                return x, self.labels[idx], self.weights[idx]

        return MapSequence(*args, **kwargs)


def finetune_images(model, backbone: str, table: pd.DataFrame, classes, image_size, *,
                    epochs: int, recipe: Recipe, batch_size: int, class_weight: dict,
                    mode: str = "auto", seed: int = 42, checkpoint: Path | None = None,
                    val_x=None, pretrained: bool = True, targets: np.ndarray | None = None,
                    loss=None) -> pd.DataFrame:
    """Fine-tune through the images: augmentation in tf.data, class weights, early stopping.

    ``targets`` (one row per training image, in table order) and ``loss`` replace the one-hot
    labels and the recipe's loss (distillation: :mod:`helpers.distill`); the loss then carries
    any class weighting itself.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    trainable = bb.set_trainable(model, backbone, mode, pretrained=pretrained,
                                 bn_momentum=recipe.bn_momentum)
    print(f"fine-tune {backbone} ({mode}): {trainable} trainable weight tensors, "
          f"peak lr {recipe.finetune_lr:g}")
    train = table[table["split"] == "train"]
    val = table[table["split"] == "val"]
    n_classes = len(classes)
    ds = images.make_dataset(train, classes, image_size, batch_size=batch_size, training=True,
                             augment=True, cache=True, seed=seed, targets=targets)
    if targets is None:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, n_classes)))
    ds = distribute.shard_by_data(ds)
    if val_x is None:
        val_x = distribute.shard_by_data(images.make_dataset(
            val, classes, image_size, batch_size=batch_size, training=False,
            cache=True).map(lambda x, y: x))
    _compile_finetune(model, recipe, steps_per_epoch=int(np.ceil(len(train) / batch_size)),
                      epochs=epochs, loss=loss)
    best = BestBalancedAccuracy(val_x, label_indices(val, classes), patience=recipe.patience,
                                checkpoint=checkpoint, baseline=True)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    model.fit(ds, epochs=epochs, class_weight=class_weight if targets is None else None,
              verbose=0,
              callbacks=[*resumable_callbacks(best), Progress("fine-tune", epochs)])
    bb.set_trainable(model, backbone, "frozen")
    return _finetune_history(best)


def _finetune_history(best: BestBalancedAccuracy) -> pd.DataFrame:
    """The fine-tuning history as a table (stage, epoch, metrics) and a line on the best epoch."""
    frame = pd.DataFrame(best.log)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    frame.insert(0, "stage", "finetune")
    print(f"fine-tune: best val balanced accuracy {best.best:.3f} at epoch {best.best_epoch + 1}"
          + (" (no epoch beat the frozen model: kept it)" if best.best_epoch < 0 else ""))
    frame.attrs["best_epoch"] = best.best_epoch + 1
    return frame


def finetune_cached(model, backbone: str, maps: dict, labels: dict, *, epochs: int,
                    recipe: Recipe, batch_size: int, class_weight: dict, seed: int = 42,
                    checkpoint: Path | None = None, pretrained: bool = True) -> pd.DataFrame:
    """Fine-tune only the top blocks on cached lower-part maps (``maps["train"]``: views x N)."""
    import keras

    keras.utils.set_random_seed(seed)
    bb.set_trainable(model, backbone, "top", pretrained=pretrained,
                     bn_momentum=recipe.bn_momentum)
    top = top_model(model, backbone)
    print(f"fine-tune {backbone} top blocks on cached maps {maps['train'].shape[2:]}: "
          f"{len(top.trainable_weights)} trainable weight tensors, peak lr {recipe.finetune_lr:g}")
    sample_w = np.array([class_weight[int(k)] for k in labels["train"]], dtype=np.float32)
    n_classes = int(model.output_shape[-1])
    seq = _MapSequence(maps["train"], labels["train"], sample_w, batch_size, seed, n_classes)
    _compile_finetune(top, recipe, steps_per_epoch=len(seq), epochs=epochs)
    best = BestBalancedAccuracy(maps["val"].astype(np.float32), labels["val"],
                                patience=recipe.patience, checkpoint=checkpoint, baseline=True)
    top.fit(seq, epochs=epochs, verbose=0,
            callbacks=[*resumable_callbacks(best), Progress("fine-tune", epochs)])
    bb.set_trainable(model, backbone, "frozen")
    return _finetune_history(best)


# --- writing run folders ------------------------------------------------------------------------

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


@dataclass
class Job:
    """Everything one training of one backbone on one task needs."""

    task: str
    backbone: str
    profile: object
    runs: Path
    table: pd.DataFrame
    weights: str | None = "imagenet"
    variants: tuple[str, ...] = ("frozen", "finetune")
    reuse: bool = True
    recipe: Recipe = field(default=None)
    seed: int | None = None
    """Training seed (initialisation, shuffling, augmentation); ``None``: the profile's. The
    split never changes with it: a seed spread measures training noise on one split."""
    tag: str = ""
    """Names a recipe experiment: the fine-tuned run is saved as ``finetune-<tag>``."""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: use {', '.join(TASKS)}")
        bb.get(self.backbone)
        bad = set(self.variants) - {"frozen", "finetune"}
        if bad:
            raise ValueError(f"variants must be frozen and/or finetune, got {sorted(bad)}")
        if self.recipe is None:
            self.recipe = recipe_for(self.backbone)
        if self.seed is None:
            self.seed = self.profile.seed


def variant_name(variant: str, weights: bb.WeightsInfo, requested: str | None,
                 tag: str = "") -> str:
    """``frozen``/``finetune``; prefixed ``random-init-`` when random init was asked for, and
    suffixed ``-<tag>`` for a recipe experiment (``finetune-bn-frozen``)."""
    name = f"random-init-{variant}" if requested in (None, "none") else variant
    return f"{name}-{tag}" if tag else name


def _reusable(path: Path, manifest: dict) -> bool:
    if not all((path / name).exists() for name in RUN_FILES):
        return False
    saved = json.loads((path / "manifest.json").read_text())
    keys = ("task", "backbone", "variant", "image_size", "profile", "split_hash",
            "split_assignment_hash", "recipe_id", "planned_epochs", "seed")
    return all(saved.get(k) == manifest.get(k) for k in keys) and \
        saved["weights"].get("sha256") == manifest["weights"].get("sha256")


def train(job: Job) -> dict[str, Path]:
    """Train a backbone on a task: frozen features + head, then fine-tuning; save run folders.

    Returns ``{variant name: run folder}``. With ``reuse`` (default) a finished run with the same
    task, backbone, variant, profile, image size, split and weights is loaded, not retrained.

    The profile's ``strategy`` decides the devices (:mod:`helpers.distribute`): models and
    optimizers are built in its scope, batches are per replica, learning rates are scaled; with
    several workers only the chief's folders are returned for keeps (the others' are scratch).
    """
    plan = distribute.plan_for(job.profile)
    print(plan.summary(job.profile.batch_size))
    recipe = job.recipe
    job = dataclasses.replace(
        job, runs=plan.writable(job.runs), reuse=job.reuse and plan.single_worker,
        recipe=dataclasses.replace(recipe, head_lr=plan.scaled_lr(recipe.head_lr),
                                   finetune_lr=plan.scaled_lr(recipe.finetune_lr)))
    with plan.strategy.scope():
        return _train(job, plan)


def _train(job: Job, plan: distribute.Plan) -> dict[str, Path]:
    """:func:`train` inside the strategy's scope."""
    import keras

    prof, recipe = job.profile, job.recipe
    dataset, classes = TASKS[job.task]
    table = job.table.reset_index(drop=True)
    classes = list(classes)
    image_size = tuple(prof.image_size)
    entry = bb.get(job.backbone)
    info = bb.resolve_weights(job.backbone, job.weights)
    split_hash = splits.table_hash(table)
    assign_hash = splits.table_hash(table.assign(group=table["split"].astype(str)))
    names = {v: variant_name(v, info, job.weights, job.tag if v == "finetune" else "")
             for v in job.variants}
    base_manifest = {
        "task": job.task, "dataset": dataset, "classes": classes, "backbone": job.backbone,
        "backbone_display": entry.display, "weights": info.to_dict(),
        "pretrained": info.pretrained, "image_size": list(image_size), "profile": prof.name,
        "split_hash": split_hash, "split_assignment_hash": assign_hash,
        "input": "float32 (None, H, W, 3) RGB 0-255; preprocessing is inside the model",
        "preprocessing": entry.input_range, "backbone_layer": f"backbone_{job.backbone}",
        "n_images": {p: int((table["split"] == p).sum()) for p in splits.PARTS},
        "seed": job.seed, "split_seed": prof.seed,
        "recipe_id": f"{entry.top_description}|{recipe}",
        "planned_epochs": {"head": prof.epochs_head, "finetune": prof.epochs_finetune},
        "provenance": provenance(),
        "distribution": plan.describe(prof.batch_size),
    }
    suffix = seed_suffix(job.seed, prof.seed)
    paths = {v: run_path(job.runs, job.task, job.backbone, names[v], suffix)
             for v in job.variants}
    if job.reuse and all(_reusable(paths[v], {**base_manifest, "variant": names[v]})
                         for v in job.variants):
        for v in job.variants:
            print(f"{names[v]}: reusing the finished run {paths[v]}")
        return {names[v]: paths[v] for v in job.variants}

    start = time.perf_counter()
    seed = job.seed
    keras.utils.set_random_seed(seed)
    print(f"{entry.display} on {job.task} (seed {seed}): weights {info.describe()}")
    model, _ = bb.build_model(job.backbone, image_size, len(classes), weights=info, seed=seed)
    plan.float32_output(model.get_layer("head"))
    bb.set_trainable(model, job.backbone, "frozen")
    parts = {p: table[table["split"] == p].reset_index(drop=True) for p in splits.PARTS}
    y = {p: label_indices(parts[p], classes) for p in splits.PARTS}
    cw = images.class_weights(parts["train"]["label"].astype(str), classes)
    cache_dir = job.runs / "features"
    key = cache_key(job.task, job.backbone, info, image_size, assign_hash)
    use_maps = "finetune" in job.variants and not entry.small
    bs = plan.global_batch(prof.batch_size)

    # 1. Cached inputs: pooled features for the head (and lower-part maps for large backbones).
    if use_maps:
        bottom = extractor(model, job.backbone, level="split")
        views = max(1, recipe.views if prof.epochs_finetune > 1 else 1)

        def compute_maps():
            out = {p: compute_outputs(bottom, parts[p], classes, image_size, batch_size=bs,
                                      desc=f"{p} maps", dtype=np.float16) for p in ("val", "test")}
            train_views = [compute_outputs(bottom, parts["train"], classes, image_size,
                                           batch_size=bs, desc="train maps", dtype=np.float16)]
            for k in range(1, views):
                train_views.append(compute_outputs(
                    bottom, parts["train"], classes, image_size, batch_size=bs, augment=True,
                    seed=prof.seed + k, desc=f"train maps (augmented view {k})",
                    dtype=np.float16))
            out["train"] = np.stack(train_views)
            return out

        maps = cached_arrays(cache_dir / f"{key}__maps{views}.npz", compute_maps,
                             what=f"{entry.display} lower-part maps ({views} train view(s))")
        pool = top_model(model, job.backbone, until="features")
        feats = {p: np.asarray(pool.predict(maps["train"][0] if p == "train" else maps[p],
                                            batch_size=64, verbose=0)) for p in splits.PARTS}
    else:
        pooled = extractor(model, job.backbone)
        feats = cached_arrays(
            cache_dir / f"{key}__pooled.npz",
            lambda: {p: compute_outputs(pooled, parts[p], classes, image_size, batch_size=bs,
                                        desc=f"{p} features") for p in splits.PARTS},
            what=f"{entry.display} pooled features")

    # 2. Frozen backbone + head on the cached features.
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    history = train_head(model, feats, y, len(classes), epochs=prof.epochs_head,
                         class_weight=cw, lr=recipe.head_lr, patience=max(5, recipe.patience),
                         seed=seed, batch_size=plan.global_batch(64))
    head_time = time.perf_counter() - start
    results = {}

    def finish(variant: str, hist: pd.DataFrame, probs: dict | None, wall: float, epochs: dict,
               extra: dict):
        scored = {p: parts[p] for p in ("val", "test")}
        views = {p: predict_views(model, scored[p], classes, image_size, batch_size=bs)
                 for p in scored}
        if probs is None:  # predictions.csv is what model.keras computes from the images
            probs = {p: views[p][0] for p in scored}
        pred, metrics = score_parts(scored, probs, {p: views[p][1] for p in scored}, classes)
        manifest = {**base_manifest, "variant": names[variant], "epochs": epochs,
                    "wall_time_s": round(wall, 1), "peak_memory_mb": process_peak_mb(),
                    "recipe": extra,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        metrics.update({k: manifest[k] for k in ("task", "backbone", "variant", "weights",
                                                 "image_size", "profile", "split_hash",
                                                 "epochs", "wall_time_s")})
        bb.set_trainable(model, job.backbone, "frozen")
        save_run(paths[variant], model, manifest=manifest, history=hist, predictions=pred,
                 metrics=metrics)
        shutil.rmtree(paths[variant] / "checkpoint", ignore_errors=True)  # the run is complete
        results[names[variant]] = paths[variant]
        t = metrics["test"]
        auc = "n/a" if t["roc_auc"] is None else f"{t['roc_auc']:.3f}"
        print(f"saved {paths[variant].name}: test balanced accuracy {t['balanced_accuracy']:.3f}, "
              f"ROC-AUC {auc} ({wall:.0f} s)")

    head_epochs = int(len(history))
    if "frozen" in job.variants:
        # pooled features from float16 maps are approximate: predict from images then
        probs = None if use_maps else {p: _head_probs(model, feats[p]) for p in ("val", "test")}
        finish("frozen", history, probs, head_time, {"head": head_epochs, "finetune": 0},
               {"head_lr": recipe.head_lr, "trained": "head on cached pooled features"})

    # 3. Fine-tuning (the recipe: warm-up, cosine decay, batch norm training).
    if "finetune" in job.variants:
        ckpt = paths["finetune"] / "checkpoint" if plan.single_worker else None
        if use_maps:
            ft = finetune_cached(model, job.backbone, maps, y, epochs=prof.epochs_finetune,
                                 recipe=recipe, batch_size=bs, class_weight=cw,
                                 seed=seed, checkpoint=ckpt, pretrained=info.pretrained)
            probs = None
            how = (f"top blocks ({entry.top_description}) on cached lower-part maps "
                   f"({maps['train'].shape[0]} view(s) of each training image, the first "
                   f"plain, the others augmented; random flips of the maps)")
        else:
            ft = finetune_images(model, job.backbone, table, classes, image_size,
                                 epochs=prof.epochs_finetune, recipe=recipe,
                                 batch_size=bs, class_weight=cw,
                                 seed=seed, checkpoint=ckpt, pretrained=info.pretrained)
            probs = None
            how = f"{entry.top_description} through augmented images"
        hist = pd.concat([history, ft], ignore_index=True)
        finish("finetune", hist, probs, time.perf_counter() - start,
               {"head": head_epochs, "finetune": int(len(ft)),
                "finetune_best": int(ft.attrs.get("best_epoch", len(ft)))},
               {**dataclasses.asdict(recipe), "trained": how, "class_weights": True,
                "optimizer": "AdamW, linear warm-up then cosine decay",
                "batchnorm": (f"trains, momentum {recipe.bn_momentum}" if recipe.bn_momentum
                              else "frozen (ImageNet statistics)" if info.pretrained
                              else "trains (random initialisation)")})
    return results


def plot_history(history: pd.DataFrame, title: str = ""):
    """Loss and validation balanced accuracy per epoch, head and fine-tuning stages in sequence."""
    import matplotlib.pyplot as plt

    hist = history.reset_index(drop=True)
    step = np.arange(1, len(hist) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for stage, rows in hist.groupby("stage", sort=False):
        idx = rows.index.to_numpy()
        axes[0].plot(step[idx], rows["loss"], marker=".", label=stage)
        if "val_balanced_accuracy" in rows:
            axes[1].plot(step[idx], rows["val_balanced_accuracy"], marker=".", label=stage)
    axes[0].set(xlabel="epoch (head, then fine-tuning)", ylabel="training loss")
    axes[1].set(xlabel="epoch (head, then fine-tuning)", ylabel="val balanced accuracy",
                ylim=(0, 1))
    for ax in axes:
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _head_probs(model, features: np.ndarray) -> np.ndarray:
    """The head applied to pooled features (what the full model computes after pooling)."""
    kernel, bias = model.get_layer("head").get_weights()
    logits = features.astype(np.float64) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def train_for_chapter(ctx, task: str, backbone: str, *, weights: str | None = "imagenet",
                      variants: Sequence[str] = ("frozen", "finetune"), reuse: bool = True,
                      table: pd.DataFrame | None = None):
    """Chapter 03's one call: the task's sample table from ``ctx`` (or ``table``), then
    :func:`train`."""
    dataset, _ = TASKS[task]
    if table is None:
        table = ctx.samples(dataset, split="load")
    return train(Job(task=task, backbone=backbone, profile=ctx.profile, runs=ctx.runs,
                     table=table, weights=weights, variants=tuple(variants), reuse=reuse))


def main(argv: list[str] | None = None) -> int:
    import argparse

    import helpers

    parser = argparse.ArgumentParser(prog="python -m helpers.training",
                                     description="Train one backbone on one task (run folders).")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--task", default="ham10000", choices=sorted(TASKS))
    parser.add_argument("--backbone", required=True, choices=sorted(bb.REGISTRY))
    parser.add_argument("--weights", default="imagenet", help="imagenet (default), none, or a path")
    parser.add_argument("--variants", nargs="+", default=["frozen", "finetune"])
    parser.add_argument("--retrain", action="store_true", help="ignore finished runs")
    parser.add_argument("--views", type=int, default=None,
                        help="augmented views cached for top-block fine-tuning (recipe default)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed (default: the profile's); other seeds get their own "
                             "run folders (..._seed<N>) for a seed spread; the split stays")
    parser.add_argument("--create-split", action="store_true",
                        help="compute the split if chapter 02 has not saved it")
    parser.add_argument("--bn-frozen", action="store_true",
                        help="fine-tune with batch norm frozen (ImageNet statistics) instead of "
                             "training at the recipe's momentum; saved as finetune-bn-frozen")
    parser.add_argument("--strategy", choices=distribute.KINDS, default=None,
                        help="tf.distribute strategy (default: the profile's, auto)")
    args = parser.parse_args(argv)
    ctx = helpers.setup("03", args.profile, tensorflow=True)
    dataset, _ = TASKS[args.task]
    table = ctx.samples(dataset, split="create" if args.create_split else "load")
    weights = None if args.weights == "none" else args.weights
    recipe = recipe_for(args.backbone)
    if args.views is not None:
        recipe = dataclasses.replace(recipe, views=args.views)
    if args.bn_frozen:
        recipe = dataclasses.replace(recipe, bn_momentum=None)
    profile = ctx.profile if args.strategy is None else dataclasses.replace(
        ctx.profile, strategy=args.strategy)
    out = train(Job(task=args.task, backbone=args.backbone, profile=profile, runs=ctx.runs,
                    table=table, weights=weights,
                    variants=("finetune",) if args.bn_frozen else tuple(args.variants),
                    reuse=not args.retrain, recipe=recipe, seed=args.seed,
                    tag="bn-frozen" if args.bn_frozen else ""))
    for name, path in out.items():
        m = json.loads((path / "metrics.json").read_text())["test"]
        print(f"{name}: {path} test {json.dumps(m)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
