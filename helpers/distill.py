"""Knowledge distillation: one mobile network that learns from an ensemble (Hinton et al., 2015).

The ensemble of chapter 09 is too slow for a phone. Its *soft* predictions on the training
images carry more than the labels do: that a naevus looks a little like a melanoma, that this
`bkl` could pass for a `bcc`. A student network trained to match them (at a raised softmax
temperature) as well as the labels usually keeps part of the ensemble's gain at the cost of
one small model.

The student is trained exactly like chapter 03's fine-tuned run of the same backbone (same
recipe, epochs, seed, head on cached features first, whole-network fine-tuning with the
warm-up, cosine decay and batch norm training), except for the fine-tuning loss
(:func:`distillation_loss`). Its run of the same backbone trained alone is the control.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import backbones as bb
from helpers import derived, feature_cache, fitting, images, run_folders, scoring, splits


def distillation_loss(n_classes: int, *, temperature: float = 2.0, alpha: float = 0.5,
                      class_weight: np.ndarray | None = None):
    """A Keras loss for ``y_true = [one-hot label, teacher probabilities]`` (``2 * n_classes``
    columns) and the student's softmax output.

    ``alpha * CE(label, p) + (1 - alpha) * T**2 * KL(teacher_T || p_T)``, where ``q_T`` is
    ``softmax(log q / T)`` (Hinton et al.'s softened distributions; the ``T**2`` keeps the
    gradients of both terms on one scale). ``class_weight`` (one weight per class) weighs
    every image's loss by its true class, as class weights do in chapter 03.
    """
    from keras import ops

    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"temperature must be > 0 and alpha in [0, 1], got {temperature}, "
                         f"{alpha}")
    weights = None if class_weight is None else ops.convert_to_tensor(
        np.asarray(class_weight, dtype="float32"))

    def loss(y_true, y_pred):
        label, teacher = y_true[:, :n_classes], y_true[:, n_classes:]
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        hard = -ops.sum(label * log_p, axis=-1)
        soft_p = ops.log_softmax(log_p / temperature, axis=-1)
        soft_t = ops.softmax(ops.log(ops.clip(teacher, 1e-7, 1.0)) / temperature, axis=-1)
        kl = ops.sum(soft_t * (ops.log(ops.clip(soft_t, 1e-7, 1.0)) - soft_p), axis=-1)
        per_image = alpha * hard + (1.0 - alpha) * temperature ** 2 * kl
        if weights is not None:
            per_image = per_image * ops.take(weights, ops.argmax(label, axis=-1))
        return per_image

    loss.__name__ = f"distillation_T{temperature:g}_alpha{alpha:g}"
    return loss


def teacher_probabilities(members: list[run_folders.RunFolder], table: pd.DataFrame, *,
                          batch_size: int = 32) -> np.ndarray:
    """The ensemble's mean probabilities on ``table``'s images (one plain view each)."""
    out = []
    for run in members:
        model = run.load_model()
        out.append(scoring.predict_images(model, table, run.classes, run.image_size,
                                          batch_size=batch_size))
    return np.mean(out, axis=0)


def mobile_control(runs: dict[str, run_folders.RunFolder], y_val: np.ndarray,
                   backbone: str = "") -> run_folders.RunFolder:
    """The fine-tuned run whose backbone the student gets: ``backbone``'s if given, else the
    small (phone-sized) backbone whose fine-tuned run scores best on validation (4 flips)."""
    from helpers import metrics

    tuned = {n: r for n, r in runs.items() if r.manifest["variant"] == "finetune"
             and r.manifest["pretrained"] and (r.manifest["backbone"] == backbone
                                               or (not backbone and bb.get(
                                                   r.manifest["backbone"]).small))}
    if not tuned:
        want = backbone or "a small backbone (MobileNet, MobileNetV2)"
        raise FileNotFoundError(f"no fine-tuned pretrained run of {want} to distil into: run "
                                f"python -m helpers.training --backbone "
                                f"{backbone or 'mobilenet_075'}")
    return max(tuned.values(), key=lambda r: (metrics.balanced_accuracy(
        y_val, r.probabilities("val", flips=True)), r.path.name))


def _reusable(folder: Path, settings: dict) -> bool:
    manifest = folder / "manifest.json"
    if not run_folders.is_complete(folder):
        return False
    return json.loads(manifest.read_text()).get("distillation") == settings


def train_student(runs_root: Path, table: pd.DataFrame, teacher: list[run_folders.RunFolder],
                  control: run_folders.RunFolder, *, profile, temperature: float = 2.0,
                  alpha: float = 0.5, cache_dir: Path) -> Path:
    """Distil the ``teacher`` runs' mean into ``control``'s backbone; its derived folder.

    ``control``: the run of the student's backbone trained alone (chapter 03's fine-tuned run);
    the student copies its recipe, seed and epochs. A finished student with the same settings
    is reused; an interrupted one resumes from its checkpoint.
    """
    m = control.manifest
    backbone, classes, image_size = m["backbone"], control.classes, control.image_size
    if splits.table_hash(table) != m["split_hash"]:
        raise ValueError(f"{control.path.name} was trained on another split")
    recipe = fitting.recipe_for(backbone)
    settings = {"teacher": sorted(r.path.name for r in teacher), "temperature": temperature,
                "alpha": alpha, "control": control.path.name, "seed": m["seed"],
                "epochs": m["planned_epochs"], "recipe": repr(recipe),
                "split_hash": m["split_hash"]}
    folder = derived.path(runs_root, m["task"], f"{backbone}__distilled")
    if _reusable(folder, settings):
        print(f"reusing the finished student {folder}")
        return folder

    import keras

    start = time.perf_counter()
    table = table.reset_index(drop=True)
    parts = {p: table[table["split"] == p].reset_index(drop=True) for p in splits.PARTS}
    y = {p: scoring.label_indices(parts[p], classes) for p in splits.PARTS}
    info = bb.resolve_weights(backbone, "imagenet")
    if info.sha256 != m["weights"].get("sha256"):
        raise ValueError(f"the student's weights ({info.describe()}) are not the control's")
    keras.utils.set_random_seed(m["seed"])
    model, _ = bb.build_model(backbone, image_size, len(classes), weights=info, seed=m["seed"])
    bb.set_trainable(model, backbone, "frozen")
    cw = images.class_weights(parts["train"]["label"].astype(str), classes)
    assign_hash = splits.table_hash(table.assign(group=table["split"].astype(str)))
    pooled = feature_cache.extractor(model, backbone)
    key = feature_cache.cache_key(m["task"], backbone, info, image_size, assign_hash)
    feats = feature_cache.cached_arrays(
        Path(cache_dir) / f"{key}__pooled.npz",
        lambda: {p: feature_cache.compute_outputs(pooled, parts[p], classes, image_size,
                                                  batch_size=profile.batch_size,
                                                  desc=f"{p} features") for p in splits.PARTS},
        what=f"{m['backbone_display']} pooled features")
    history = fitting.train_head(model, feats, y, len(classes), epochs=profile.epochs_head,
                                 class_weight=cw, lr=recipe.head_lr,
                                 patience=max(5, recipe.patience), seed=m["seed"])
    print(f"teacher: mean of {len(teacher)} run(s) on {len(parts['train'])} training images")
    soft = teacher_probabilities(teacher, parts["train"], batch_size=profile.batch_size)
    targets = np.concatenate([np.eye(len(classes))[y["train"]], soft], axis=1)
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([cw[k] for k in range(len(classes))], dtype=np.float32)
    ft = fitting.finetune_images(
        model, backbone, table, classes, image_size, epochs=profile.epochs_finetune,
        recipe=recipe, batch_size=profile.batch_size, class_weight=cw, seed=m["seed"],
        checkpoint=folder / "checkpoint", targets=targets,
        loss=distillation_loss(len(classes), temperature=temperature, alpha=alpha,
                               class_weight=weights))
    scored = {p: parts[p] for p in ("val", "test")}
    views = {p: scoring.predict_views(model, scored[p], classes, image_size,
                                      batch_size=profile.batch_size) for p in scored}
    folder = derived.save(
        folder, model, base={**m, "distillation": settings}, variant="distilled student",
        inputs="image", derived_from=[control.path.name, *settings["teacher"]], parts=scored,
        probs={p: views[p][0] for p in scored}, flipped={p: views[p][1] for p in scored},
        history=pd.concat([history, ft], ignore_index=True),
        wall_time_s=time.perf_counter() - start,
        how=f"{m['backbone_display']} fine-tuned like {control.path.name}, the loss matching "
            f"the teacher's probabilities at temperature {temperature:g} (weight "
            f"{1 - alpha:g}) and the labels (weight {alpha:g}), class-weighted")
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return folder
