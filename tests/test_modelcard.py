"""The model card: generated from a real run folder and what was measured, and shipped with
every export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from before_patient_run import patient_run  # noqa: F401 (fixture)
from helpers import DISCLAIMER, modelcard


@pytest.fixture(scope="module")
def card(patient_run) -> str:
    return (patient_run.path / modelcard.CARD_FILE).read_text()


def test_card_has_hugging_face_front_matter_with_measured_results(patient_run, card):
    meta = modelcard.front_matter(card)
    assert meta["library_name"] == "keras" and meta["pipeline_tag"] == "image-classification"
    assert "not-a-medical-device" in meta["tags"]
    (entry,) = meta["model-index"]
    assert entry["name"] == patient_run.path.name
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["split"] == "test"
    evaluation = json.loads((patient_run.path / modelcard.EVALUATION_FILE).read_text())
    values = {m["type"]: m["value"] for m in result["metrics"]}
    for name, row in evaluation["metrics"].items():
        if row["estimate"] is not None:
            assert values[name] == pytest.approx(row["estimate"], abs=1e-4), name
    ba = evaluation["metrics"]["balanced_accuracy"]
    assert ba["low"] <= ba["estimate"] <= ba["high"]


def test_card_covers_use_data_metrics_subgroups_ood_referral_and_limits(card):
    for heading in ("## Intended use", "## Training data", "## Metrics", "## Subgroups",
                    "## Out-of-distribution behaviour", "## Referral operating point",
                    "## Artefacts", "## Limitations"):
        assert heading in card, heading
    assert "not a diagnosis" in card.lower()
    assert DISCLAIMER in card
    assert "Fitzpatrick" in card and "0.57" in card  # the DDI evidence
    assert "95% CI" in card
    assert "Not measured" not in card and "not measured" not in card.split("## Metrics")[1]
    assert "too few to tell" in card


def test_card_numbers_come_from_the_run_folder(patient_run, card):
    referral = json.loads((patient_run.path / "referral.json").read_text())
    assert f"{referral['unsure_threshold']:.3f}" in card
    assert f"{referral['malignant_threshold']:.3f}" in card
    ood = json.loads((patient_run.path / "ood.json").read_text())
    assert f"{ood['thresholds']['features']:.1f}" in card


def test_card_of_an_unmeasured_run_says_what_is_missing(patient_run, tmp_path):
    for name in ("manifest.json", "metrics.json"):
        shutil.copy2(patient_run.path / name, tmp_path / name)
    text = modelcard.write(tmp_path).read_text()
    assert modelcard.front_matter(text)["model-index"][0]["results"] == []
    assert "Not measured yet" in text
    assert "No out-of-distribution gate fitted yet" in text


def test_quality_reads_the_measured_balanced_accuracy(patient_run, tmp_path):
    q = modelcard.quality(patient_run.path)
    assert q["split"] == "test" and q["low"] <= q["balanced_accuracy"] <= q["high"]
    assert modelcard.quality(tmp_path) is None


def test_export_ships_the_card_beside_the_tflite_model(patient_run, tmp_path):
    from helpers import export

    run = tmp_path / "run"
    shutil.copytree(patient_run.path, run)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 80, 3)).astype(np.float32)
    exported = export.export_run(run, images, variants=("float32",))
    folder = exported["float32"].tflite.parent
    assert (folder / modelcard.CARD_FILE).read_text().startswith("---\n")
    for name in ("referral.json", modelcard.EVALUATION_FILE):
        assert (folder / name).read_bytes() == (run / name).read_bytes()
    contract = json.loads(exported["float32"].contract.read_text())
    assert contract["model_card"] == modelcard.CARD_FILE
