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
``metrics.json`` (:mod:`helpers.run_folders`; other chapters read them with its ``load_run``).

This module runs the whole job; its parts live in modules with one job each:
:mod:`helpers.feature_cache` (cached features and maps), :mod:`helpers.fitting` (the recipe,
compile, the head and the fine-tuning fits), :mod:`helpers.callbacks` (early stopping on
balanced accuracy, resumable), :mod:`helpers.scoring` (predictions and metrics) and
:mod:`helpers.run_folders`.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import backbones as bb
from helpers import datasets, distribute, images, splits
from helpers.feature_cache import (cache_key, cached_arrays, compute_outputs, extractor,
                                   predict_in_chunks, top_model)
from helpers.fitting import Recipe, finetune_cached, finetune_images, recipe_for, train_head
from helpers.resources import process_peak_mb
from helpers.run_folders import is_complete, provenance, run_path, save_run, seed_suffix
from helpers.scoring import label_indices, predict_views, score_parts


TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ham10000": ("ham10000", datasets.HAM_CLASSES),
    "melanoma10k": ("melanoma10k", datasets.BINARY_CLASSES),
}
"""Task name -> (sample-table name for ``ctx.samples``, class order of the model output)."""


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
    if not is_complete(path):
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
            # views x train images, filled in place: view 0 plain, the others augmented
            out["train"] = np.empty((views, len(parts["train"])) + out["val"].shape[1:],
                                    dtype=np.float16)
            for k in range(views):
                compute_outputs(bottom, parts["train"], classes, image_size, batch_size=bs,
                                augment=k > 0, seed=prof.seed + k, out=out["train"][k],
                                desc=f"train maps (augmented view {k})" if k else "train maps")
            return out

        maps = cached_arrays(cache_dir / f"{key}__maps{views}.npz", compute_maps,
                             what=f"{entry.display} lower-part maps ({views} train view(s))")
        pool = top_model(model, job.backbone, until="features")
        feats = {p: predict_in_chunks(pool, maps["train"][0] if p == "train" else maps[p])
                 for p in splits.PARTS}
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
