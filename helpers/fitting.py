"""Fitting: the recipe of each backbone, the compile steps, the head on cached features and the two
ways of fine-tuning (through augmented images, or the top blocks on cached maps)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import backbones as bb
from helpers import distribute, images
from helpers.callbacks import BestBalancedAccuracy, Progress, resumable_callbacks
from helpers.feature_cache import top_model
from helpers.scoring import label_indices


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


def compile_head(model, lr: float):
    """Adam at a constant ``lr`` and integer labels (the head on cached features)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy())


def compile_finetune(model, recipe: Recipe, *, steps_per_epoch: int, epochs: int, loss=None):
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
    compile_head(head, lr)
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
    compile_finetune(model, recipe, steps_per_epoch=int(np.ceil(len(train) / batch_size)),
                     epochs=epochs, loss=loss)
    best = BestBalancedAccuracy(val_x, label_indices(val, classes), patience=recipe.patience,
                                checkpoint=checkpoint, baseline=True)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    model.fit(ds, epochs=epochs, class_weight=class_weight if targets is None else None,
              verbose=0,
              callbacks=[*resumable_callbacks(best), Progress("fine-tune", epochs)])
    bb.set_trainable(model, backbone, "frozen")
    return finetune_history(best)


def finetune_history(best: BestBalancedAccuracy) -> pd.DataFrame:
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
    compile_finetune(top, recipe, steps_per_epoch=len(seq), epochs=epochs)
    best = BestBalancedAccuracy(maps["val"].astype(np.float32), labels["val"],
                                patience=recipe.patience, checkpoint=checkpoint, baseline=True)
    top.fit(seq, epochs=epochs, verbose=0,
            callbacks=[*resumable_callbacks(best), Progress("fine-tune", epochs)])
    bb.set_trainable(model, backbone, "frozen")
    return finetune_history(best)
