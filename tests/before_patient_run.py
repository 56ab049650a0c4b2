"""A small real run folder for the chapter "Before a model meets a patient", built once.

The model is chapter 03's architecture (``helpers.backbones.build_model``: MobileNet alpha 0.25
with its real ImageNet weights, pooled ``features``, ``dropout``, softmax ``head``) at 64x80
pixels, its head trained on real HAM10000 images split by lesion. The run folder holds what
chapter 03 writes (model, manifest, metrics, history, predictions of val and test with 4-flip
columns) and then what the chapter adds, computed with the same helpers: the
out-of-distribution gate (``ood.npz``/``ood.json``), the referral rule (``referral.json``),
``evaluation.json``, ``subgroups.csv``, ``artefacts.csv`` and ``model_card.md``.

Test modules import the fixture: ``from before_patient_run import patient_run``. The folder
is built once per session (a marker file in pytest's base temporary folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import datasets

IMAGE_SIZE = (64, 80)
CLASSES = list(datasets.HAM_CLASSES)
LESIONS_PER_CLASS = 30


@dataclass
class PatientRun:
    """The run folder and what the tests need to check it against."""

    path: Path
    table: pd.DataFrame  # the images with their split, metadata and lesion group


def sample_table(ham_table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Up to 30 lesions per class, all their photos, split by lesion 60/20/20."""
    rng = np.random.default_rng(seed)
    lesions = ham_table.drop_duplicates("group")[["group", "label"]]
    parts = []
    for _, rows in lesions.groupby("label", observed=True):
        chosen = rows.sample(min(LESIONS_PER_CLASS, len(rows)), random_state=seed)["group"]
        chosen = chosen.to_numpy()[rng.permutation(len(chosen))]
        n = len(chosen)
        cut1, cut2 = int(round(0.6 * n)), int(round(0.8 * n))
        parts += [pd.DataFrame({"group": chosen[:cut1], "split": "train"}),
                  pd.DataFrame({"group": chosen[cut1:cut2], "split": "val"}),
                  pd.DataFrame({"group": chosen[cut2:], "split": "test"})]
    split = pd.concat(parts).set_index("group")["split"]
    table = ham_table[ham_table["group"].isin(split.index)].copy()
    table["split"] = table["group"].map(split)
    return table.sort_values(["split", "image_id"]).reset_index(drop=True)


def build(folder: Path, ham_table: pd.DataFrame, weights: Path) -> PatientRun:
    import keras

    from helpers import (artefacts, backbones, download, images, metrics, modelcard, ood, referral,
                         run_folders, scoring, subgroups)

    keras.utils.set_random_seed(0)
    table = sample_table(ham_table)
    parts = {p: table[table["split"] == p].reset_index(drop=True) for p in ("train", "val", "test")}
    y = {p: scoring.label_indices(parts[p], CLASSES) for p in parts}
    model, info = backbones.build_model("mobilenet_025", IMAGE_SIZE, len(CLASSES),
                                        weights=str(weights))
    outs = {p: ood.table_outputs(model, parts[p], CLASSES, IMAGE_SIZE, views=4 if p != "train"
                                 else 1) for p in parts}
    # the head, trained on the pooled features of the training images (as chapter 03's frozen run)
    inputs = keras.Input((outs["train"][0].features.shape[1],))
    head_only = keras.Model(inputs, model.get_layer("head")(inputs))
    head_only.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    weights_of = images.class_weights(parts["train"]["label"].astype(str), CLASSES)
    head_only.fit(outs["train"][0].features, y["train"], epochs=60, batch_size=32, verbose=0,
                  class_weight=weights_of)
    outs = {p: ood.table_outputs(model, parts[p], CLASSES, IMAGE_SIZE, views=4 if p != "train"
                                 else 1) for p in parts}
    folder.mkdir(parents=True, exist_ok=True)
    predictions = pd.concat([run_folders.predictions_frame(
        parts[p], outs[p][0].probs, CLASSES, np.mean([v.probs for v in outs[p]], axis=0))
        for p in ("val", "test")], ignore_index=True)
    run_metrics = {p: scoring.split_metrics(y[p], outs[p][0].probs, len(CLASSES))
                   for p in ("val", "test")}
    manifest = {"task": "ham10000", "dataset": "ham10000", "classes": CLASSES,
                "backbone": "mobilenet_025", "backbone_display": "MobileNet (alpha 0.25)",
                "weights": info.to_dict(), "pretrained": True, "image_size": list(IMAGE_SIZE),
                "profile": "test", "variant": "test", "seed": 0, "wall_time_s": 0.0,
                "n_images": {p: len(parts[p]) for p in parts}, "created": "test"}
    run_folders.save_run(folder, model, manifest=manifest,
                         history=pd.DataFrame({"stage": ["head"], "epoch": [1], "loss": [0.0]}),
                         predictions=predictions, metrics=run_metrics)

    # what the chapter adds, with the same helpers
    gate = ood.fit_gate(outs["train"][0], y["train"], CLASSES, outs["val"][0],
                        model_sha=download.file_digest(folder / "model.keras"))
    gate.save(folder, measured={"acceptance": [], "auroc": None})
    y_val, p_val = metrics.from_predictions(predictions, CLASSES, split="val")
    y_test, p_test = metrics.from_predictions(predictions, CLASSES, split="test")
    policy = referral.fit_policy(y_val, p_val, CLASSES)
    point = referral.operating_point(policy, y_test, p_test, groups=parts["test"]["group"],
                                     rounds=50)
    policy.measured = {"test": {k: {"estimate": r["estimate"], "low": r["low"],
                                    "high": r["high"]} for k, r in point.iterrows()}}
    policy.save(folder)
    modelcard.save_json(folder, modelcard.EVALUATION_FILE, modelcard.measure(
        y_test, p_test, CLASSES, groups=parts["test"]["group"].tolist(), rounds=50,
        profile="test"))
    groups_table = subgroups.all_subgroups(parts["test"], y_test, p_test, CLASSES,
                                           min_images=10, min_melanomas=3, rounds=50)
    subgroups.readable(groups_table).reset_index().to_csv(folder / modelcard.SUBGROUPS_FILE,
                                                          index=False)
    few = parts["test"].head(8)
    altered = artefacts.predict_altered(list(few["path"]), IMAGE_SIZE,
                                        lambda x: ood.compute_outputs(model, [x]))
    stress = artefacts.stress_test(
        {k: ood.Outputs.concat(v).probs for k, v in altered.items()},
        scoring.label_indices(few, CLASSES), CLASSES)
    stress.round(4).reset_index().to_csv(folder / modelcard.ARTEFACTS_FILE, index=False)
    modelcard.write(folder)
    table.to_csv(folder / "table.csv", index=False)
    return PatientRun(folder, table)


@pytest.fixture(scope="session")
def patient_run(tmp_path_factory, ham_table, mobilenet_025_weights) -> PatientRun:
    """The small real run folder with everything the chapter writes (built once per session)."""
    folder = tmp_path_factory.getbasetemp() / "patient_run"
    if not (folder / "done").exists():
        build(folder, ham_table, mobilenet_025_weights)
        (folder / "done").write_text("ok")
    table = pd.read_csv(folder / "table.csv", dtype={"image_id": str})
    return PatientRun(folder, table)
