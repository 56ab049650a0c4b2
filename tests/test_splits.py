"""helpers.splits on the full real HAM10000 table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import datasets, splits
from helpers.splits import SplitLeakError


@pytest.fixture(scope="module")
def split(ham_table) -> pd.Series:
    return splits.grouped_split(ham_table, seed=42)


def test_no_lesion_is_in_two_parts(ham_table, split):
    table = ham_table.assign(split=split)
    splits.check_no_leak(table)
    lesions = {part: set(table.loc[table["split"] == part, "group"]) for part in splits.PARTS}
    assert not lesions["train"] & lesions["val"]
    assert not lesions["train"] & lesions["test"]
    assert not lesions["val"] & lesions["test"]
    assert set.union(*lesions.values()) == set(ham_table["group"])
    # the lesions with several photos are where a leak would come from: there are many
    assert (ham_table.groupby("group").size() > 1).sum() > 1_500


def test_sizes_are_70_15_15(split):
    shares = split.value_counts(normalize=True)
    assert set(shares.index) == set(splits.PARTS)
    assert shares["train"] == pytest.approx(0.70, abs=0.01)
    assert shares["val"] == pytest.approx(0.15, abs=0.01)
    assert shares["test"] == pytest.approx(0.15, abs=0.01)


def test_every_class_is_in_every_part_with_its_share(ham_table, split):
    by_class = pd.crosstab(ham_table["label"], split)
    assert (by_class > 0).all().all()
    overall = ham_table["label"].value_counts(normalize=True)
    for part in splits.PARTS:
        in_part = ham_table.loc[split == part, "label"].value_counts(normalize=True)
        assert (in_part - overall).abs().max() < 0.01, part
    per_class = pd.crosstab(ham_table["label"], split, normalize="index")
    assert (per_class["test"] - 0.15).abs().max() < 0.02


def test_reproducible_from_the_seed_and_different_for_another(ham_table, split):
    assert splits.grouped_split(ham_table, seed=42).equals(split)
    other = splits.grouped_split(ham_table, seed=7)
    assert (other != split).mean() > 0.2
    splits.check_no_leak(ham_table.assign(split=other))


def test_row_order_does_not_change_the_split(ham_table, split):
    shuffled = ham_table.sample(frac=1.0, random_state=3)
    again = splits.grouped_split(shuffled, seed=42)
    assert again.sort_index().equals(split.sort_index())


def test_other_sizes_are_honoured(ham_table):
    custom = splits.grouped_split(ham_table, val_size=0.1, test_size=0.2, seed=1)
    shares = custom.value_counts(normalize=True)
    assert shares["val"] == pytest.approx(0.1, abs=0.01)
    assert shares["test"] == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="sum below 1"):
        splits.grouped_split(ham_table, val_size=0.5, test_size=0.5)


def test_small_subsample_still_has_every_class_in_every_part(ham_table):
    small = datasets.subsample(ham_table, 300, seed=42)
    part = splits.grouped_split(small, seed=42)
    assert (pd.crosstab(small["label"], part) > 0).all().all()
    splits.check_no_leak(small.assign(split=part))


def test_binary_view_keeps_the_lesion_grouping(ham_table, split):
    binary = datasets.binary_view(ham_table.assign(split=split))
    splits.check_no_leak(binary)
    part = splits.grouped_split(datasets.binary_view(ham_table), seed=42)
    splits.check_no_leak(ham_table.assign(split=part))


def test_check_no_leak_raises_on_a_crafted_leak(ham_table, split):
    table = ham_table.assign(split=split)
    repeated = table.groupby("group").size()
    lesion = repeated[repeated > 1].index[0]
    rows = table.index[table["group"] == lesion]
    table.loc[rows[0], "split"] = "train"
    table.loc[rows[1], "split"] = "test"
    with pytest.raises(SplitLeakError, match=rf"1 groups .* e\.g\. {lesion}"):
        splits.check_no_leak(table)


def test_random_image_split_leaks_and_leak_report_shows_it(ham_table, split):
    leaky = ham_table.assign(split=splits.random_image_split(ham_table, seed=42))
    with pytest.raises(SplitLeakError):
        splits.check_no_leak(leaky)
    report = splits.leak_report(leaky)
    shared = report["images whose lesion is also in train"]
    assert shared["test"] > 300 and shared["val"] > 300
    assert report["images"].sum() == len(ham_table)
    clean = splits.leak_report(ham_table.assign(split=split))
    assert (clean["images whose lesion is also in train"] == 0).all()


def test_load_or_create_split_saves_reloads_and_recomputes(ham_table, tmp_path, capsys):
    path = tmp_path / "splits" / "ham10000.csv"
    first = splits.load_or_create_split(ham_table, path, seed=42)
    assert path.exists() and path.with_suffix(".json").exists()
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["table_hash"] == splits.table_hash(ham_table) and saved["seed"] == 42
    assert first["split"].equals(splits.grouped_split(ham_table, seed=42))

    # reloading reads the file (proved by editing it by hand: the edit comes back)
    on_disk = pd.read_csv(path)
    moved = on_disk["image_id"].isin(first.loc[first["group"] == first["group"].iloc[0],
                                               "image_id"])
    flipped = "val" if first["split"].iloc[0] != "val" else "test"
    on_disk.loc[moved, "split"] = flipped
    on_disk.to_csv(path, index=False)
    again = splits.load_or_create_split(ham_table, path, seed=42)
    assert (again.loc[moved.to_numpy(), "split"] == flipped).all()
    assert (again["split"] != first["split"]).sum() == moved.sum()
    assert capsys.readouterr().out == ""

    # a different table (here: one image fewer) or seed makes it recompute and say why
    smaller = ham_table.iloc[1:]
    redone = splits.load_or_create_split(smaller, path, seed=42)
    assert "table_hash" in capsys.readouterr().out
    assert len(redone) == len(smaller)
    assert json.loads(path.with_suffix(".json").read_text())["n_images"] == len(smaller)
    splits.load_or_create_split(smaller, path, seed=3)
    assert "seed" in capsys.readouterr().out


def test_load_or_create_split_refuses_a_saved_split_that_leaks(ham_table, tmp_path):
    path = tmp_path / "ham10000.csv"
    first = splits.load_or_create_split(ham_table, path, seed=42)
    on_disk = pd.read_csv(path)
    repeated = first.groupby("group").size()
    ids = first.loc[first["group"] == repeated[repeated > 1].index[0], "image_id"]
    on_disk.loc[on_disk["image_id"] == ids.iloc[0], "split"] = "train"
    on_disk.loc[on_disk["image_id"] == ids.iloc[1], "split"] = "test"
    on_disk.to_csv(path, index=False)
    with pytest.raises(SplitLeakError):
        splits.load_or_create_split(ham_table, path, seed=42)


def test_table_hash_ignores_row_order_but_sees_labels(ham_table):
    digest = splits.table_hash(ham_table)
    assert splits.table_hash(ham_table.sample(frac=1.0, random_state=0)) == digest
    relabelled = ham_table.copy()
    relabelled.loc[0, "label"] = "mel" if relabelled.loc[0, "label"] != "mel" else "nv"
    assert splits.table_hash(relabelled) != digest
