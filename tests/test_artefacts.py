"""Artefacts drawn on a real HAM10000 photo, and the stress-test table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from before_patient_run import CLASSES, patient_run  # noqa: F401 (fixture)
from helpers import artefacts, images, modelcard


@pytest.fixture(scope="module")
def photo(ham_sample):
    return images.read_image(ham_sample["path"].iloc[0])


def test_each_artefact_changes_pixels_and_keeps_the_shape(photo):
    out = artefacts.apply_all([photo], seed=0)
    assert list(out) == ["clean", *artefacts.ARTEFACTS]
    for name, (altered,) in out.items():
        assert altered.shape == photo.shape and altered.dtype == np.uint8, name
        changed = np.mean(np.any(altered != photo, axis=2))
        if name == "clean":
            assert changed == 0
        else:
            assert 0.005 < changed, f"{name} changed {changed:.1%} of the pixels"


def test_artefacts_are_seeded(photo):
    a = artefacts.apply_all([photo], seed=1)
    b = artefacts.apply_all([photo], seed=1)
    c = artefacts.apply_all([photo], seed=2)
    for name in artefacts.ARTEFACTS:
        np.testing.assert_array_equal(a[name][0], b[name][0])
    assert not np.array_equal(a["ink marks"][0], c["ink marks"][0])


def test_ink_is_gentian_violet_and_leaves_the_centre(photo):
    inked = artefacts.ink_marks(photo, np.random.default_rng(0))
    violet = np.all(inked == artefacts.GENTIAN_VIOLET, axis=2)
    h, w = violet.shape
    assert violet.sum() > 100
    assert not violet[h // 3:2 * h // 3, w // 3:2 * w // 3].any()


def test_stress_table_measures_changes_against_clean():
    y = np.array([CLASSES.index("nv")] * 3 + [CLASSES.index("mel")])
    clean = np.eye(len(CLASSES))[y] * 0.9 + 0.1 / len(CLASSES)
    inked = clean.copy()
    inked[0] = np.eye(len(CLASSES))[CLASSES.index("mel")]
    table = artefacts.stress_test({"clean": clean, "ink marks": inked}, y, CLASSES,
                                  malignant_flag=lambda p: p[:, CLASSES.index("mel")] > 0.5)
    assert table.loc["clean", "prediction changed"] == 0
    assert table.loc["ink marks", "prediction changed"] == pytest.approx(0.25)
    assert table.loc["ink marks", "naevi called melanoma"] == pytest.approx(1 / 3)
    assert table.loc["ink marks", "naevi given the malignant advice"] == pytest.approx(1 / 3)
    assert table.attrs["naevi"] == 3


def test_saved_stress_table_on_real_images(patient_run):
    saved = pd.read_csv(patient_run.path / modelcard.ARTEFACTS_FILE)
    assert saved["images"].tolist() == ["clean", *artefacts.ARTEFACTS]
    assert saved.loc[saved["images"] == "clean", "prediction changed"].item() == 0
