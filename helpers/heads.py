"""Small heads trained on cached features: the image-only control and the fitting rule.

Chapter 09 compares heads that differ in one thing (metadata as a second input, the loss, the
class weights) on the same cached features, so the difference is the thing compared. Every one
is fitted by :func:`fit_head`: Adam, early stopping on validation balanced accuracy, the best
epoch's weights kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def image_head(feature_dim: int, n_classes: int, *, dropout: float = 0.3, seed: int = 42):
    """The control: the same head on the image features alone."""
    import keras

    features = keras.Input((feature_dim,), name="image_features")
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(features, outputs, name="image_head")


def fit_head(head, x: dict, y: dict, *, class_weight: dict | None, epochs: int,
             lr: float = 1e-3, batch_size: int = 64, patience: int = 5, seed: int = 42,
             loss=None) -> pd.DataFrame:
    """Train ``head`` on ``x["train"]`` (an array, or a list of arrays for several inputs).

    Adam at ``lr``; early stopping on validation balanced accuracy with the best epoch's
    weights kept (:class:`helpers.callbacks.BestBalancedAccuracy`). ``loss`` defaults to sparse
    cross-entropy on the softmax output. Returns the history (one row per epoch).
    """
    import keras

    from helpers import callbacks  # noqa: PLC0415 - keeps this module free of TensorFlow

    keras.utils.set_random_seed(seed)  # the shuffling; build the head after seeding too
    head.compile(optimizer=keras.optimizers.Adam(lr),
                 loss=loss or keras.losses.SparseCategoricalCrossentropy())
    best = callbacks.BestBalancedAccuracy(x["val"], y["val"], patience=patience)
    hist = head.fit(x["train"], y["train"], batch_size=batch_size, epochs=epochs,
                    class_weight=class_weight, shuffle=True, verbose=0, callbacks=[best])
    frame = pd.DataFrame(hist.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    frame.attrs["best_epoch"] = best.best_epoch + 1
    return frame


def predict_views(head, feature_views: np.ndarray, metadata: np.ndarray | None = None
                  ) -> np.ndarray:
    """``(views, N, K)`` probabilities of ``head`` on each view's features ``(views, N, D)``
    (with the same ``metadata`` rows for every view, for a two-input head)."""
    return np.stack([np.asarray(head.predict(f if metadata is None else [f, metadata],
                                             batch_size=256, verbose=0))
                     for f in feature_views])


def on_images(image_model, head):
    """One model from images (and metadata, for a two-input head) to probabilities.

    ``image_model``'s pooled features (its ``features`` layer) feed ``head``; the inputs are
    RGB 0-255 ``(None, H, W, 3)`` and, when ``head`` has a second input, the metadata vector.
    """
    import keras

    features = keras.Model(image_model.input, image_model.get_layer("features").output,
                           name="image_features")
    rgb = keras.Input(image_model.input_shape[1:], name="rgb_0_255")
    if len(head.inputs) == 1:
        return keras.Model(rgb, head(features(rgb)), name=f"{head.name}_on_images")
    meta = keras.Input(head.inputs[1].shape[1:], name="metadata")
    return keras.Model([rgb, meta], head([features(rgb), meta]), name=f"{head.name}_on_images")
