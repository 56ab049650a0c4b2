"""The near-duplicate finder on real images: copies are found, different lesions are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import crossdata, datasets, download

# Pairs checked by eye: melanoma10k files that are resized re-encoded HAM10000 images, and
# melanoma10k files whose nearest HAM10000 image is a different lesion.
KNOWN_COPIES = {"melanoma_9514": "ISIC_0031087", "melanoma_5211": "ISIC_0026754",
                "melanoma_6712": "ISIC_0024739"}
KNOWN_DIFFERENT = ("melanoma_9208", "melanoma_7708", "melanoma_955")
# HAM10000 lists the same photograph under two lesion ids (HAM_0000140 and HAM_0004919).
SAME_PICTURE_TWO_LESION_IDS = ("ISIC_0030074", "ISIC_0025226")


@pytest.fixture(scope="module")
def ham():
    return datasets.load_ham10000()


@pytest.fixture(scope="module")
def ham_sample(ham):
    special = set(KNOWN_COPIES.values()) | set(SAME_PICTURE_TWO_LESION_IDS)
    rest = ham[~ham["image_id"].isin(special)].sample(n=1500, random_state=0)
    return pd.concat([ham[ham["image_id"].isin(special)], rest], ignore_index=True)


def _melanoma_rows(stems):
    root = datasets.dataset_dir("melanoma10k") / "train"
    rows = []
    for stem in stems:
        path = next(root.glob(f"*/{stem}.jpg"))
        rows.append({"image_id": f"train_{stem}", "path": str(path), "label": path.parent.name,
                     "group": stem})
    return pd.DataFrame(rows)


def test_signature_ignores_brightness_and_contrast(ham):
    thumb = crossdata.thumbnail(ham["path"].iloc[0]).astype(np.float32)
    changed = np.clip(thumb * 0.6 + 60, 0, 255)
    a, b = crossdata.signatures(np.stack([thumb, changed]))
    assert crossdata.distance(a, b) < 0.01
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)


def test_resized_reencoded_copy_is_found_among_many(ham_sample, tmp_path):
    original = ham_sample.iloc[10]
    copy_bytes = crossdata.resized_copy(original["path"], (300, 300), quality=75)
    copy_path = tmp_path / "copy.jpg"
    copy_path.write_bytes(copy_bytes)
    assert download.file_digest(copy_path) != download.file_digest(original["path"])
    query = pd.DataFrame({"image_id": ["copy"], "path": [str(copy_path)], "label": ["x"]})
    found = crossdata.find_near_duplicates(query, ham_sample, progress=False)
    assert found.loc[0, "match_id"] == original["image_id"]
    assert found.loc[0, "duplicate"]
    assert found.loc[0, "distance"] < crossdata.DEFAULT_THRESHOLD / 2


def test_synthetic_copies_all_fall_below_the_threshold(ham):
    distances = crossdata.synthetic_copy_distances(ham, n=40, seed=1)
    assert distances["variant"].nunique() == 4 and len(distances) == 160
    assert distances["distance"].max() < crossdata.DEFAULT_THRESHOLD


def test_real_melanoma10k_copies_found_and_different_lesions_not(ham_sample, tmp_path):
    query = _melanoma_rows(list(KNOWN_COPIES) + list(KNOWN_DIFFERENT))
    found = crossdata.find_near_duplicates(query, ham_sample, cache_dir=tmp_path,
                                           query_name="m", reference_name="h", progress=False)
    by_id = found.set_index("image_id")
    for stem, ham_id in KNOWN_COPIES.items():
        assert by_id.loc[f"train_{stem}", "match_id"] == ham_id
        assert by_id.loc[f"train_{stem}", "duplicate"]
    for stem in KNOWN_DIFFERENT:
        assert not by_id.loc[f"train_{stem}", "duplicate"]
    # the thumbnail cache is written and gives the same answer when read back
    assert (tmp_path / "h_thumbs.npz").exists()
    again = crossdata.find_near_duplicates(query, ham_sample, cache_dir=tmp_path,
                                           query_name="m", reference_name="h", progress=False)
    pd.testing.assert_frame_equal(found, again)


def test_different_lesions_stay_above_the_threshold(ham_sample):
    near = crossdata.within_dataset_distances(ham_sample, progress=False)
    pair = set(SAME_PICTURE_TWO_LESION_IDS)
    flagged = near[near["distance"] < crossdata.DEFAULT_THRESHOLD]
    # The only "different lesions" under the threshold are one photo listed under two ids.
    assert set(flagged["image_id"]) == pair
    assert set(flagged["match_id"]) == pair
    others = near[~near["image_id"].isin(pair)]["distance"]
    assert others.min() > 1.3 * crossdata.DEFAULT_THRESHOLD


def test_nearest_works_in_chunks():
    rng = np.random.default_rng(0)
    reference = crossdata.signatures(rng.integers(0, 255, (50, 32, 32)).astype(np.uint8))
    query = reference[[3, 17, 42]]
    for chunk in (1, 2, 1024):
        index, dist = crossdata.nearest(query, reference, chunk=chunk)
        assert index.tolist() == [3, 17, 42]
        np.testing.assert_allclose(dist, 0.0, atol=1e-3)


def test_external_summary_excludes_copies():
    y = np.array([1, 1, 0, 0, 1, 0], bool)
    score = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.7])
    copies = np.array([1, 0, 0, 0, 0, 0], bool)
    table = crossdata.external_summary(y, score, copies, specificity=0.6)
    honest = table.loc["copies excluded (honest)"]
    assert honest["n_images"] == 5 and honest["n_positive"] == 2
    # remaining: positives 0.8, 0.1; negatives 0.3, 0.2, 0.7 -> 3 of 6 pairs ranked right
    assert honest["auc"] == pytest.approx(3 / 6)
    assert table.loc["copies included (leaky)", "n_images"] == 6
