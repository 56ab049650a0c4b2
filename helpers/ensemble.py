"""Ensembles of finished runs: members chosen on validation, probabilities averaged.

Averaging the probabilities of models that err differently is the most reliable gain in
skin-lesion challenges (every ISIC winner averaged many networks). The members are chosen by
greedy forward selection on validation (Caruana et al., ICML 2004): start from the best single
run, add the run that raises the average's validation balanced accuracy most, stop when none
does or at ``max_members``. The test split is not read.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from helpers import metrics


def average(probas: list[np.ndarray]) -> np.ndarray:
    """The mean of several ``(N, K)`` probability arrays (the ensemble's prediction)."""
    if not probas:
        raise ValueError("an ensemble needs at least one member")
    shapes = {p.shape for p in probas}
    if len(shapes) != 1:
        raise ValueError(f"members predict different shapes {sorted(shapes)}: same images and "
                         f"classes, in the same order, are needed")
    return np.mean(probas, axis=0)


def greedy_members(y_val: np.ndarray, val_probas: Mapping[str, np.ndarray], *,
                   max_members: int = 3) -> tuple[list[str], list[dict]]:
    """Members chosen by greedy forward selection on validation balanced accuracy.

    ``val_probas``: run name -> its validation probabilities. Returns the chosen names in the
    order they were added, and one row per step (members so far, validation score).
    """
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    score = {name: metrics.balanced_accuracy(y_val, p) for name, p in val_probas.items()}
    chosen = [max(score, key=lambda n: (score[n], n))]
    steps = [{"members": list(chosen), "val_balanced_accuracy": score[chosen[0]]}]
    while len(chosen) < max_members:
        trials = {n: metrics.balanced_accuracy(
            y_val, average([val_probas[m] for m in [*chosen, n]]))
            for n in val_probas if n not in chosen}
        if not trials:
            break
        best = max(trials, key=lambda n: (trials[n], n))
        if trials[best] <= steps[-1]["val_balanced_accuracy"]:
            break
        chosen.append(best)
        steps.append({"members": list(chosen), "val_balanced_accuracy": trials[best]})
    return chosen, steps


def ensemble_model(models: list, name: str = "ensemble"):
    """One Keras model averaging the members' probabilities (all take the same RGB input)."""
    import keras

    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"members take different inputs {sorted(shapes)}; an ensemble of one "
                         f"model needs one input size")
    rgb = keras.Input(shapes.pop(), name="rgb_0_255")
    outs = []
    for i, m in enumerate(models):
        wrapped = keras.Model(m.input, m.output, name=f"member_{i}_{m.name}")
        outs.append(wrapped(rgb))
    out = outs[0] if len(outs) == 1 else keras.layers.Average(name="mean_probability")(outs)
    return keras.Model(rgb, out, name=name)
