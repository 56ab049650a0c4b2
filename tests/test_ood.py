"""The out-of-distribution gate on real images and a real (small) model.

The gate is fitted on real HAM10000 training images and thresholded on real validation images
(``before_patient_run``); it must refuse the photos shipped inside scikit-learn and matplotlib,
noise and solid colours, and accept held-out HAM10000 test lesions at about the rate chosen on
validation. Its thresholds must follow from the validation scores it saved.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from before_patient_run import CLASSES, IMAGE_SIZE, patient_run  # noqa: F401 (fixture)
from helpers import ood, predict


@pytest.fixture(scope="module")
def model(patient_run):
    import keras

    return keras.models.load_model(patient_run.path / "model.keras", compile=False)


@pytest.fixture(scope="module")
def gate(patient_run):
    loaded, reason = ood.load_gate(patient_run.path / "model.keras")
    assert loaded is not None, reason
    return loaded


def outputs_of(model, rgbs):
    pixels = np.stack([predict.resize(rgb, IMAGE_SIZE) for rgb in rgbs])
    return ood.compute_outputs(model, ood.array_batches(pixels))


def test_everyday_photos_come_from_installed_packages():
    photos = ood.everyday_photos()
    names = [name for name, _ in photos]
    assert {"scikit-learn china.jpg", "scikit-learn flower.jpg",
            "matplotlib grace_hopper.jpg"} <= set(names)
    assert len(photos) >= 20
    for _, rgb in photos:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert min(rgb.shape[:2]) >= 32


def test_gate_refuses_packaged_photos(model, gate):
    photos = ood.everyday_photos()
    accepted = gate.accepts(*_fs(outputs_of(model, [rgb for _, rgb in photos])))
    refused = [name for (name, _), ok in zip(photos, accepted) if not ok]
    passed = [name for (name, _), ok in zip(photos, accepted) if ok]
    assert len(refused) >= 0.9 * len(photos), f"accepted: {passed}"
    whole = [i for i, (name, _) in enumerate(photos) if "," not in name]
    assert not accepted[whole].any(), "a whole packaged photo passed as a lesion"


def test_gate_refuses_noise_and_solid_colours(model, gate):
    synthetic = [s for s in ood.synthetic_images(seed=0) if s[0] in ("noise", "solid colour")]
    accepted = gate.accepts(*_fs(outputs_of(model, [rgb for _, _, rgb in synthetic])))
    assert not accepted.any(), [name for (_, name, _), ok in zip(synthetic, accepted) if ok]


def test_gate_accepts_test_lesions_at_about_the_validation_rate(patient_run, model, gate):
    """Held-out lesions through the prediction command's path (decode, PIL resize)."""
    from helpers.decoding import decode

    test = patient_run.table[patient_run.table["split"] == "test"]
    accepted = gate.accepts(*_fs(outputs_of(model, [decode(p).rgb for p in test["path"]])))
    assert len(test) >= 40
    assert accepted.mean() >= gate.recall - 0.12, f"{accepted.mean():.2f} of {len(test)}"
    on_val = np.mean(gate.combined(gate.val_scores) <= 1)
    assert on_val >= gate.recall


def test_thresholds_follow_from_the_saved_validation_scores(gate):
    np.testing.assert_array_equal(ood.joint_thresholds(gate.val_scores, gate.recall),
                                  gate.thresholds)
    accepted = (gate.val_scores <= gate.thresholds).all(axis=1)
    assert accepted.mean() >= gate.recall
    # one step tighter on both parts would accept fewer than asked
    tighter = np.array([np.max(col[col < t]) for col, t in zip(gate.val_scores.T,
                                                               gate.thresholds)])
    assert ((gate.val_scores <= tighter).all(axis=1)).mean() < gate.recall


def test_val_scores_are_what_the_model_computes(patient_run, model, gate):
    from helpers import run_folders

    val = patient_run.table[patient_run.table["split"] == "val"].reset_index(drop=True)
    run = run_folders.load_run(patient_run.path)
    outs = ood.table_outputs(model, val, run.classes, run.image_size)[0]
    np.testing.assert_allclose(gate.score(outs.features, outs.stats), gate.val_scores,
                               rtol=1e-4)


def test_saved_gate_reloads_to_the_same_verdicts(patient_run, model, gate, tmp_path):
    photos = [rgb for _, rgb in ood.everyday_photos(crops=False)]
    outs = outputs_of(model, photos)
    again = ood.Gate.load(patient_run.path)
    np.testing.assert_allclose(again.score(outs.features, outs.stats),
                               gate.score(outs.features, outs.stats), rtol=1e-5)
    info = json.loads((patient_run.path / ood.INFO_FILE).read_text())
    assert info["chosen_on"].startswith("in-distribution validation")
    verdict = gate.check(outs.features, outs.stats)[0]
    assert verdict["in_distribution"] is False and "does not look like" in verdict["message"]
    assert set(verdict["distances"]) == set(ood.PARTS)


def test_a_gate_fitted_for_another_model_is_not_used(patient_run, tmp_path):
    for name in ("model.keras", ood.GATE_FILE, ood.INFO_FILE):
        shutil.copy2(patient_run.path / name, tmp_path / name)
    assert ood.load_gate(tmp_path / "model.keras")[0] is not None
    with open(tmp_path / "model.keras", "ab") as handle:
        handle.write(b"changed")
    gate, reason = ood.load_gate(tmp_path / "model.keras")
    assert gate is None and "another version" in reason
    (tmp_path / ood.GATE_FILE).unlink()
    gate, reason = ood.load_gate(tmp_path / "model.keras")
    assert gate is None and "no out-of-distribution gate" in reason


def test_image_statistics_describe_what_they_say():
    flat = np.full((1, 40, 60, 3), 200.0)
    noise = np.random.default_rng(0).integers(0, 256, (1, 40, 60, 3)).astype(float)
    lesion_like = np.full((1, 40, 60, 3), [210.0, 160, 150])
    lesion_like[:, 12:28, 18:42] = [120, 70, 60]
    stats = {name: ood.image_statistics(x)[0] for name, x in
             (("flat", flat), ("noise", noise), ("lesion", lesion_like))}
    col = {name: i for i, name in enumerate(ood.STATISTICS)}
    assert stats["flat"][col["log texture"]] == 0
    assert stats["flat"][col["correlation red-green"]] == 0  # undefined for a flat channel
    assert abs(stats["noise"][col["correlation red-green"]]) < 0.1
    assert stats["lesion"][col["correlation red-green"]] > 0.9
    assert stats["lesion"][col["centre minus border brightness"]] < 0
    assert len(stats["noise"]) == len(ood.STATISTICS)


def test_joint_thresholds_on_a_known_case():
    scores = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [100, 1], [5, 500]], float)
    t = ood.joint_thresholds(scores, recall=0.5)
    assert ((scores <= t).all(axis=1)).mean() >= 0.5
    np.testing.assert_array_equal(t, [4, 30])  # 4th smallest of each column
    assert ood.threshold_at_recall([5, 1, 3, 2, 4], 0.8) == 4


def test_auroc_and_energy_on_known_values():
    assert ood.auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert ood.auroc([0, 1], [2, 3]) == 0.0
    assert ood.auroc([5], [1], higher_is_in=False) == 0.0
    logits = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(ood.energy_score(logits), [np.log(2), 10 + np.log1p(np.exp(-10))])


def test_mc_dropout_varies_and_without_dropout_is_the_plain_head(patient_run, model):
    from helpers import run_folders

    run = run_folders.load_run(patient_run.path)
    test = patient_run.table[patient_run.table["split"] == "test"].reset_index(drop=True)
    outs = ood.table_outputs(model, test.head(16), run.classes, run.image_size)[0]
    passes = ood.mc_dropout(model, outs.features, passes=50, seed=0)
    assert passes.shape == (50, 16, len(CLASSES))
    np.testing.assert_allclose(passes.sum(axis=2), 1.0, atol=1e-9)
    assert not np.allclose(passes[0], passes[1])
    layer = model.get_layer("dropout")
    rate, layer.rate = layer.rate, 0.0
    try:  # no dropout: every pass is what the model itself computes
        plain = ood.mc_dropout(model, outs.features, passes=3, seed=0)
    finally:
        layer.rate = rate
    np.testing.assert_allclose(plain, np.broadcast_to(outs.probs, plain.shape), atol=1e-5)


def _fs(outputs):
    return outputs.features, outputs.stats
