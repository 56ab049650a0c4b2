"""The prediction command and the web app use what the chapter measured: a lesion, an everyday
photo and noise get three different answers.

The model and its files (gate, referral rule, evaluation, model card) are the small real run of
``before_patient_run``; the lesion is a real held-out HAM10000 image the gate accepts, the
everyday photo scikit-learn's sample photo, the noise generated. The browser test drives the
page in headless Chromium (Debian's chromium through Playwright), as tests/test_webapp.py does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from before_patient_run import CLASSES, patient_run  # noqa: F401 (fixture)
from helpers import DISCLAIMER, advice, predict, referral
from test_webapp import ARTIFACTS, DESKTOP, PHONE, browser, open_page, serve  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
OOD_TEXT = "does not look like a dermoscopic image of a skin lesion"


@pytest.fixture(scope="module")
def keras_predictor(patient_run):
    return predict.load(patient_run.path / "model.keras")


@pytest.fixture(scope="module")
def photos(patient_run, keras_predictor, tmp_path_factory) -> dict[str, Path]:
    """A held-out lesion the gate accepts, scikit-learn's temple photo, and noise, as files."""
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("three_photos")
    test = patient_run.table[patient_run.table["split"] == "test"]
    lesion = next(Path(p) for p in test["path"]
                  if keras_predictor.predict_file(p)["in_distribution"])
    everyday = folder / "china.jpg"
    Image.fromarray(load_sample_images().images[0]).save(everyday, quality=90)
    noise = folder / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)).save(noise)
    return {"lesion": lesion, "everyday": everyday, "noise": noise}


def test_three_photos_three_answers_from_the_prediction_command(patient_run, photos):
    done = subprocess.run([sys.executable, "-m", "helpers.predict", "--model",
                           str(patient_run.path / "model.keras"), *map(str, photos.values())],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lesion, everyday, noise = (json.loads(line) for line in done.stdout.splitlines())
    for result in (lesion, everyday, noise):
        assert set(advice.FIELDS) <= set(result)
        assert set(result["probabilities"]) == set(CLASSES)  # every class, for scripts
        assert result["malignant_classes"] == ["akiec", "bcc", "mel"]
        assert result["model_card"] == "model_card.md"
        q = result["model_quality"]
        assert q["low"] <= q["balanced_accuracy"] <= q["high"] and q["split"] == "test"
    assert lesion["in_distribution"] is True and lesion["ood"]["available"] is True
    assert lesion["headline"].startswith("Most likely: ")
    assert lesion["referral"]["level"] in ("see_a_doctor_soon", "unsure", "no_flag")
    assert lesion["referral"]["message"] == referral.advise(
        np.array([lesion["probabilities"][c] for c in CLASSES]),
        referral.ReferralPolicy.load(patient_run.path), names=advice.CLASS_NAMES)["message"]
    for refused in (everyday, noise):
        assert refused["in_distribution"] is False
        assert OOD_TEXT in refused["headline"] and "Most likely" not in refused["headline"]
        assert refused["referral"]["level"] == "not_a_lesion"
        assert refused["ood"]["score"] > 1 and refused["ood"]["reasons"]
    assert any("colours and texture" in reason for reason in noise["ood"]["reasons"])
    assert "Measured balanced accuracy of this model" in done.stderr
    assert DISCLAIMER in done.stderr


def test_level_follows_the_saved_thresholds(patient_run, keras_predictor, photos):
    result = keras_predictor.predict_file(photos["lesion"])
    r = result["referral"]
    if r["malignant_score"] >= r["malignant_threshold"]:
        assert r["level"] == "see_a_doctor_soon" and "doctor" in r["message"]
    elif r["confidence"] < r["unsure_threshold"]:
        assert r["level"] == "unsure" and "unsure" in r["message"]
    else:
        assert r["level"] == "no_flag"


def test_exported_tflite_says_it_has_no_gate_but_keeps_the_advice(patient_run, photos,
                                                                   tmp_path):
    import shutil

    from helpers import export

    run = tmp_path / "run"
    shutil.copytree(patient_run.path, run)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 80, 3)).astype(np.float32)
    exported = export.export_run(run, images, variants=("float32",))
    contract = json.loads(exported["float32"].contract.read_text())
    assert set(contract["advice"]["fields"]) >= {"in_distribution", "referral.level",
                                                 "model_quality", "model_card"}
    result = predict.load(exported["float32"].tflite).predict_file(photos["noise"])
    assert result["in_distribution"] is None and result["ood"]["available"] is False
    assert "TFLite" in result["ood"]["reason"]
    assert result["referral"]["level"] in ("see_a_doctor_soon", "unsure", "no_flag")
    assert result["model_quality"]["balanced_accuracy"] > 0 and result["model_card"]


def test_api_carries_the_same_fields_and_serves_the_card(patient_run, keras_predictor, photos):
    from helpers.webapp import create_app

    client = create_app(keras_predictor).test_client()
    answers = {}
    for name, path in photos.items():
        reply = client.post("/api/predict", data={"image": (path.open("rb"), path.name)},
                            content_type="multipart/form-data")
        assert reply.status_code == 200, reply.get_data(as_text=True)
        answers[name] = reply.get_json()
        direct = keras_predictor.predict_file(path)
        for key in ("in_distribution", "headline", "malignant_classes", "model_quality",
                    "model_card"):
            assert answers[name][key] == direct[key], (name, key)
        assert answers[name]["referral"]["level"] == direct["referral"]["level"]
    assert answers["lesion"]["in_distribution"] is True
    assert answers["everyday"]["in_distribution"] is False is answers["noise"]["in_distribution"]
    assert "png_base64" not in answers["noise"]["gradcam"]
    card = client.get("/model-card")
    assert card.status_code == 200 and card.mimetype == "text/plain"
    assert card.get_data(as_text=True) == (patient_run.path / "model_card.md").read_text()
    page = client.get("/").get_data(as_text=True)
    assert 'id="model-quality"' in page and "Measured balanced accuracy" in page
    assert 'href="/model-card"' in page


def test_browser_shows_three_different_answers(browser, patient_run, photos, tmp_path):
    """Headless Chromium: a lesion, an everyday photo and noise, one after the other."""
    ARTIFACTS.mkdir(exist_ok=True)
    seen = {}
    with serve(patient_run.path / "model.keras", tmp_path) as server:
        for name, photo in photos.items():
            with open_page(browser, server.url, DESKTOP if name != "noise" else PHONE) as (
                    page, problems):
                assert "Measured balanced accuracy" in page.inner_text("#model-quality")
                page.set_input_files("#image-input", str(photo))
                page.click("#submit")
                page.wait_for_selector("#result", timeout=60_000)
                seen[name] = page.inner_text("#result h2")
                if name == "lesion":
                    assert page.locator("#predicted-class").count() == 1
                    assert page.locator("#ood-message").count() == 0
                    advice_text = page.inner_text("#advice")
                    assert any(word in advice_text for word in ("doctor", "unsure", "fairly sure"))
                    assert page.locator("#bars tr").count() == len(CLASSES)
                    assert page.locator("#bars").is_visible()
                    assert page.locator("#bars tr.malignant .flag").count() == 3
                else:
                    assert page.locator("#predicted-class").count() == 0
                    assert OOD_TEXT in page.inner_text("#ood-message")
                    assert not page.locator("#bars").is_visible()  # folded away
                    assert page.locator("#gradcam").count() == 0
                assert "not a diagnosis" in page.inner_text("#result .disclaimer")
                page.screenshot(path=ARTIFACTS / f"webapp-before-patient-{name}.png",
                                full_page=True)
                assert problems == []
                if name == "lesion":
                    page.click("#model-card-link")
                    page.wait_for_load_state()
                    assert "# Model card" in page.inner_text("body")
    assert seen["lesion"].startswith("Most likely:") and OOD_TEXT not in seen["lesion"]
    assert OOD_TEXT in seen["everyday"] and OOD_TEXT in seen["noise"]
