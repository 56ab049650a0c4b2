"""Groups that are lesions (helpers.lesions), on the full real HAM10000 and melanoma10k sets.

The claim a split makes is "no lesion on both sides". These tests check it from the pictures,
independently of the grouping code: every pair of near-identical images (signature distance
below the duplicate threshold) must sit in one part, in both datasets, on the laptop profile's
saved split (all images).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import helpers
from helpers import crossdata, datasets, lesions, splits


@pytest.fixture(scope="module")
def ctx(data_root, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("SKINBOOK_RUNS", str(tmp_path_factory.mktemp("runs")))
    return helpers.setup("02", "laptop", data_root=data_root)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def ham(ctx, ham_dir):
    return ctx.samples("ham10000", split="create")


@pytest.fixture(scope="module")
def mel(ctx, ham, melanoma_dir):
    return ctx.samples("melanoma10k", split="create")


def test_close_pairs_finds_copies_and_only_copies():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 32, 32)).astype(np.uint8)
    brighter = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    signs = crossdata.signatures(np.stack([a, a, b, brighter]))
    pairs = {tuple(p) for p in lesions.close_pairs(signs, crossdata.DEFAULT_THRESHOLD)}
    assert pairs == {(0, 1), (0, 3), (1, 3)}


def test_ham10000_photo_listed_under_two_lesion_ids_is_one_group(ham):
    by_id = ham.set_index("image_id")
    assert by_id.loc["ISIC_0030074", "lesion_id"] != by_id.loc["ISIC_0025226", "lesion_id"]
    assert by_id.loc["ISIC_0030074", "group"] == by_id.loc["ISIC_0025226", "group"]
    assert by_id.loc["ISIC_0030074", "split"] == by_id.loc["ISIC_0025226", "split"]
    merges = ham.attrs["group_merges"]
    assert merges["groups_before"] == ham["lesion_id"].nunique()
    assert merges["groups_after"] == ham["group"].nunique() == merges["groups_before"] - \
        merges["joined_as_duplicate_photos"]
    assert merges["joined_as_duplicate_photos"] >= 1


def test_melanoma10k_copies_take_their_ham10000_lesion(ctx, ham, mel):
    matches = crossdata.find_near_duplicates(mel, ham, cache_dir=ctx.runs / "thumbnails",
                                             query_name="melanoma10k", reference_name="ham10000",
                                             progress=False)
    copies = matches[matches["duplicate"]]
    assert len(copies) >= 1_100  # all 1,113 HAM10000 melanomas are in melanoma10k
    ham_group = dict(zip(ham["image_id"], ham["group"]))
    mel_group = dict(zip(mel["image_id"], mel["group"]))
    assert all(mel_group[q] == ham_group[r] for q, r in zip(copies["image_id"],
                                                            copies["match_id"]))
    # lesions with several photos: their copies are in one part of the melanoma10k split
    per_lesion = mel[mel["group"].isin(set(ham_group.values()))].groupby("group")
    assert (per_lesion.size() > 1).sum() > 200
    assert (per_lesion["split"].nunique() == 1).all()
    assert mel.attrs["group_merges"]["copies_of_reference_images"] == len(copies)


@pytest.mark.parametrize("name", ["ham10000", "melanoma10k"])
def test_no_near_duplicate_pair_spans_two_parts(name, ham, mel, ctx):
    """Independent of the groups: every pair of near-identical pictures is in one part."""
    table = ham if name == "ham10000" else mel
    splits.check_no_leak(table)
    signs = crossdata.signatures(crossdata.thumbnails(
        table, ctx.runs / "thumbnails" / f"{name}_thumbs.npz", progress=False))
    pairs = lesions.close_pairs(signs, crossdata.DEFAULT_THRESHOLD)
    assert len(pairs) >= 1
    part = table["split"].to_numpy()
    crossing = pairs[part[pairs[:, 0]] != part[pairs[:, 1]]]
    assert len(crossing) == 0, table["image_id"].to_numpy()[crossing[:3]]


def test_the_saved_split_records_the_merges(ctx, ham, mel):
    import json

    for name, table in (("ham10000", ham), ("melanoma10k", mel)):
        saved = json.loads(ctx.split_path(name).with_suffix(".json").read_text())
        assert saved["notes"] == table.attrs["group_merges"]
        pairs = pd.read_csv(ctx.merges_path(name))
        assert len(pairs) == (saved["notes"]["joined_as_duplicate_photos"]
                              + saved["notes"]["joined_to_reference_lesions"])
        assert set(pairs["rule"]) <= {"duplicate photo", "copy of a reference image"}


def test_without_ham10000_melanoma10k_still_groups_its_own_duplicates(melanoma_dir):
    table = datasets.load_melanoma10k(melanoma_dir.parent)
    sample = table[table["label"] == "malignant"].head(600)
    grouped, pairs = lesions.merge_duplicates(sample)
    assert grouped["group"].nunique() == len(sample) - len(pairs)
    assert grouped.attrs["group_merges"]["copies_of_reference_images"] == 0
