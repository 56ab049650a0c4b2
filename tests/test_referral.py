"""Referral: risk-coverage, its area, thresholds chosen on validation, and the saved rule.

Known answers on hand-made arrays first; then the rule saved in a real run folder
(``before_patient_run``) must be reproduced from that folder's saved validation predictions,
and so must the rule the smoke book wrote, when the book has run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from before_patient_run import CLASSES, patient_run  # noqa: F401 (fixture)
from helpers import config, metrics, referral, run_folders

Y = np.array([0, 0, 1, 1, 0, 1])
P = np.array([[0.95, 0.05], [0.80, 0.20], [0.30, 0.70], [0.55, 0.45], [0.40, 0.60],
              [0.45, 0.55]])


def test_risk_coverage_refers_the_least_confident_first():
    curve = referral.risk_coverage(Y, P, shares=[0, 1 / 3, 2 / 3])
    assert curve["kept"].tolist() == [6, 4, 2]
    np.testing.assert_allclose(curve["accuracy"], [4 / 6, 3 / 4, 1.0])
    np.testing.assert_allclose(curve["referred"], [0, 1 / 3, 2 / 3])


def test_aurc_known_values():
    # most to least confident: right, right, right, wrong (0.6), wrong (0.55), right (0.55)
    expected = np.mean([0, 0, 0, 1 / 4, 2 / 5, 2 / 6])
    assert referral.aurc(Y, P) == pytest.approx(expected)
    assert referral.optimal_aurc(Y, P) == pytest.approx(np.mean([0, 0, 0, 0, 1 / 5, 2 / 6]))
    worst = referral.aurc(Y, P, conf=(P.argmax(1) != Y).astype(float))  # errors first
    assert worst > referral.aurc(Y, P) > referral.optimal_aurc(Y, P)


def test_threshold_for_share_refers_that_share():
    conf = np.random.default_rng(0).random(200)
    for share in (0.1, 0.35, 0.5):
        t = referral.threshold_for_share(conf, share)
        assert np.mean(conf < t) == pytest.approx(np.ceil(share * 200) / 200)
    with pytest.raises(ValueError):
        referral.threshold_for_share(conf, 1.0)


def test_threshold_for_accuracy_is_the_fewest_referrals_reaching_it():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet(np.ones(3), 300)
    proba[np.arange(150), y[:150]] += 2  # half are right and confident
    proba /= proba.sum(1, keepdims=True)
    conf = referral.confidence(proba)
    t = referral.threshold_for_accuracy(y, proba, target=0.9)
    keep = conf >= t
    assert metrics.accuracy(y[keep], proba[keep]) >= 0.9
    lower = conf[conf < t].max()  # referring one image fewer falls short
    keep_more = conf >= lower
    assert metrics.accuracy(y[keep_more], proba[keep_more]) < 0.9
    assert referral.threshold_for_accuracy(y, proba, target=1.01) is None


def test_threshold_for_sensitivity_catches_the_target_share():
    positive = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], bool)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.1, 0.5, 0.2, 0.4, 0.3])
    t = referral.threshold_for_sensitivity(positive, score, 0.5)
    assert t == 0.6 and np.mean(score[positive] >= t) >= 0.5
    assert referral.threshold_for_sensitivity(positive, score, 1.0) == 0.3


def test_advice_levels():
    policy = referral.ReferralPolicy(classes=list(CLASSES), temperature=1.0,
                                     unsure_threshold=0.6, malignant_threshold=0.5)
    probs = dict.fromkeys(CLASSES, 0.0)
    sure_nv = np.array([{**probs, "nv": 0.9, "bkl": 0.1}[c] for c in CLASSES])
    unsure = np.array([{**probs, "nv": 0.4, "bkl": 0.35, "df": 0.25}[c] for c in CLASSES])
    malignant = np.array([{**probs, "nv": 0.45, "mel": 0.35, "bcc": 0.2}[c] for c in CLASSES])
    assert referral.advise(sure_nv, policy)["level"] == "no_flag"
    assert referral.advise(unsure, policy)["level"] == "unsure"
    advice = referral.advise(malignant, policy, names={"mel": "Melanoma"})
    assert advice["level"] == "see_a_doctor_soon" and "Melanoma 35.0%" in advice["message"]
    assert advice["malignant_score"] == pytest.approx(0.55)
    assert referral.advise(sure_nv, policy, in_distribution=False)["level"] == "not_a_lesion"
    assert referral.advise(sure_nv, None)["level"] is None


def reproduce(run_dir):
    """Refit the rule from the run folder's saved validation predictions."""
    run = run_folders.load_run(run_dir)
    saved = referral.ReferralPolicy.load(run_dir)
    y_val, p_val = metrics.from_predictions(run.predictions, run.classes, split="val")
    again = referral.fit_policy(y_val, p_val, run.classes, referral_share=saved.referral_share,
                                malignant_sensitivity=saved.malignant_sensitivity,
                                malignant_classes=saved.malignant_classes)
    return saved, again, (y_val, p_val)


def test_saved_rule_is_reproduced_from_the_saved_validation_predictions(patient_run):
    saved, again, (y_val, p_val) = reproduce(patient_run.path)
    assert saved.chosen_on == "validation" and saved.n_validation == len(y_val)
    assert again.temperature == pytest.approx(saved.temperature, rel=1e-9)
    assert again.unsure_threshold == pytest.approx(saved.unsure_threshold, rel=1e-9)
    assert again.malignant_threshold == pytest.approx(saved.malignant_threshold, rel=1e-9)
    # and the thresholds do what they say on validation
    assert np.mean(saved.refer(p_val)) == pytest.approx(
        np.ceil(saved.referral_share * len(y_val)) / len(y_val), abs=1 / len(y_val))
    malignant = np.isin(np.array(CLASSES)[y_val], saved.malignant_classes)
    caught = saved.malignant_score(p_val)[malignant] >= saved.malignant_threshold
    assert caught.mean() >= saved.malignant_sensitivity


def test_operating_point_on_test_has_intervals(patient_run):
    saved = referral.ReferralPolicy.load(patient_run.path)
    test = saved.measured["test"]
    for name in ("referred (unsure)", "accuracy of the rest", "balanced accuracy of the rest",
                 "malignant advice: sensitivity"):
        row = test[name]
        assert row["low"] <= row["estimate"] <= row["high"], name


def test_the_smoke_books_rule_is_reproduced_from_its_validation_predictions():
    found = [p.parent for p in (config.runs_root("smoke") / "models").glob(
        f"*/{referral.POLICY_FILE}")]
    if not found:
        pytest.skip("the smoke book's chapter 08 has not run here (no referral.json)")
    for run_dir in found:
        saved, again, _ = reproduce(run_dir)
        assert again.unsure_threshold == pytest.approx(saved.unsure_threshold, rel=1e-9)
        assert again.malignant_threshold == pytest.approx(saved.malignant_threshold, rel=1e-9)
        assert json.loads((run_dir / referral.POLICY_FILE).read_text())["chosen_on"] == \
            "validation"
