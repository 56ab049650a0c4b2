"""Class imbalance handled on purpose: class weights, logit adjustment and balanced softmax.

HAM10000 is two-thirds naevi. A model trained on it as it is learns the prior: "nv" is usually
right. Balanced accuracy (the mean recall over the classes) asks for the opposite. Three
standard answers, compared in chapter 09 on the same cached features:

* **class weights** in the loss (the book's default since chapter 03);
* **post-hoc logit adjustment** (Menon et al., ICLR 2021): train plainly, then subtract
  ``tau * log(prior)`` from the logits; ``tau = 1`` is the Bayes rule for balanced error, and
  ``tau`` is chosen on validation here;
* **balanced softmax** (Ren et al., NeurIPS 2020; Menon et al.'s logit-adjusted loss): train
  with ``softmax(logits + log(prior))`` and predict with ``softmax(logits)``.

On a softmax output ``p``, subtracting ``tau * log(prior)`` from the logits is
``p / prior**tau``, renormalised, so everything here works on probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers import metrics

TAUS = tuple(np.round(np.arange(-0.5, 2.01, 0.25), 2))
"""The logit-adjustment strengths :func:`choose_tau` tries."""


def class_prior(labels: Sequence[int], n_classes: int) -> np.ndarray:
    """Share of each class among ``labels`` (training labels); every class must occur."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} never occur in the "
                         f"training labels: their prior is zero and log(prior) undefined")
    return counts / counts.sum()


def logit_adjusted(proba: np.ndarray, prior: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment: ``softmax(log p - tau * log prior)``, row by row."""
    logits = np.log(np.clip(proba, 1e-12, 1.0)) - tau * np.log(prior)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def balanced_softmax_loss(prior: np.ndarray):
    """A Keras loss for integer labels and a softmax output ``p``: cross-entropy of
    ``softmax(logits + log prior)``, which is ``p * prior`` renormalised."""
    import keras
    from keras import ops

    log_prior = ops.convert_to_tensor(np.log(prior).astype("float32"))

    def loss(y_true, y_pred):
        logits = ops.log(ops.clip(y_pred, 1e-7, 1.0)) + log_prior
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    return loss


def choose_tau(y_val: np.ndarray, proba_val: np.ndarray, prior: np.ndarray,
               taus: Sequence[float] = TAUS) -> tuple[float, dict[float, float]]:
    """The ``tau`` with the highest validation balanced accuracy (ties: the smallest change,
    closest to 0), and the score of every ``tau`` tried."""
    scores = {float(t): metrics.balanced_accuracy(y_val, logit_adjusted(proba_val, prior, t))
              for t in taus}
    best = max(scores, key=lambda t: (scores[t], -abs(t)))
    return best, scores
