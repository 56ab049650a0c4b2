"""Subgroup tables on real HAM10000 metadata and a real (small) model's test predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from before_patient_run import CLASSES, patient_run  # noqa: F401 (fixture)
from helpers import metrics, modelcard, run_folders, subgroups


@pytest.fixture(scope="module")
def scored(patient_run):
    run = run_folders.load_run(patient_run.path)
    test = patient_run.table[patient_run.table["split"] == "test"].reset_index(drop=True)
    y, p = metrics.from_predictions(run.predictions, CLASSES, split="test")
    assert list(run.predictions.loc[run.predictions["split"] == "test", "image_id"]) == \
        list(test["image_id"])
    return test, y, p


def test_age_bands():
    assert [subgroups.age_band(a) for a in (5, 29.9, 30, 44, 45, 60, 74, 75, 90, None,
                                            np.nan)] == [
        "under 30", "under 30", "30-44", "30-44", "45-59", "60-74", "60-74", "75 and over",
        "75 and over", "unknown", "unknown"]


def test_every_subgroup_with_intervals_and_a_minimum_size(scored):
    test, y, p = scored
    table = subgroups.all_subgroups(test, y, p, CLASSES, min_images=10, min_melanomas=3,
                                    rounds=60, seed=0)
    assert set(table.index.get_level_values("subgroup")) == set(subgroups.COLUMNS)
    for name in subgroups.COLUMNS:
        assert table.loc[name, "images"].sum() == len(test), name
    big = table[table["images"] >= 10]
    small = table[table["images"] < 10]
    assert len(big) and len(small)
    assert big["balanced accuracy"].notna().all() and small["balanced accuracy"].isna().all()
    assert (big["bal. acc. low"] <= big["balanced accuracy"]).all()
    assert (big["balanced accuracy"] <= big["bal. acc. high"]).all()
    with_mel = table[table["melanomas"] >= 3]
    assert with_mel["melanoma sensitivity"].notna().all()
    assert table.loc[table["melanomas"] < 3, "melanoma sensitivity"].isna().all()
    shown = subgroups.readable(table)
    assert (shown.loc[small.index, "balanced accuracy (95% CI)"] == subgroups.TOO_FEW).all()
    assert shown.loc[big.index, "balanced accuracy (95% CI)"].str.match(
        r"^\d\.\d\d \(\d\.\d\d-\d\.\d\d\)$").all()


def test_intervals_are_the_lesion_grouped_bootstrap_of_helpers_metrics(scored):
    test, y, p = scored
    part = subgroups.subgroup_table(test, y, p, CLASSES, "sex", min_images=10, rounds=80,
                                    seed=3)
    value = part["images"].idxmax()
    mask = (test["sex"] == value).to_numpy()
    direct = metrics.bootstrap(metrics.balanced_accuracy, y[mask], p[mask], rounds=80, seed=3,
                               groups=test.loc[mask, "group"].to_numpy())
    assert part.loc[value, "balanced accuracy"] == pytest.approx(direct["estimate"])
    assert part.loc[value, "bal. acc. low"] == pytest.approx(direct["low"])
    assert part.loc[value, "bal. acc. high"] == pytest.approx(direct["high"])


def test_source_collection_column_is_read(scored):
    test, _, _ = scored
    assert set(test["source"].dropna()) <= {"vidir_modern", "vidir_molemax", "rosendahl",
                                            "vienna_dias"}


def test_saved_subgroup_table_is_in_the_run_folder(patient_run):
    saved = pd.read_csv(patient_run.path / modelcard.SUBGROUPS_FILE)
    assert {"subgroup", "value", "images", "balanced accuracy (95% CI)",
            "melanoma sensitivity (95% CI)"} <= set(saved.columns)
    assert (saved["balanced accuracy (95% CI)"] == subgroups.TOO_FEW).any()
