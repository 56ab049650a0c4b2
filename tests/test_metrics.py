"""helpers.metrics against sklearn, hand-computed values and synthetic cases with a known truth.

The "real predictions" come from a logistic regression on the colour statistics of real
HAM10000 images (a weak but genuine classifier), so the metrics are checked on the kind of
skewed, imperfect probabilities the book's models produce.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from helpers import datasets, images, metrics


@pytest.fixture(scope="module")
def real_predictions():
    """``(y_test, proba_test, groups_test)`` from colour features of ~600 real HAM10000 images."""
    table = datasets.subsample(datasets.load_ham10000(), 600, seed=0)
    pixels = images.load_batch(table["path"].tolist(), (24, 32)) / 255.0
    feats = np.concatenate([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2)),
                            np.percentile(pixels, [10, 50, 90], axis=(1, 2)).transpose(1, 0, 2)
                            .reshape(len(table), -1)], axis=1)
    y = table["label"].cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    lesions = table["group"].unique()
    test_lesions = set(rng.choice(lesions, size=len(lesions) // 2, replace=False))
    test = table["group"].isin(test_lesions).to_numpy()
    model = LogisticRegression(max_iter=2000).fit(feats[~test], y[~test])
    proba = np.zeros((test.sum(), len(datasets.HAM_CLASSES)))
    proba[:, model.classes_] = model.predict_proba(feats[test])
    return y[test], proba, table["group"].to_numpy()[test]


def test_headline_metrics_match_sklearn_on_real_predictions(real_predictions):
    y, proba, _ = real_predictions
    pred = proba.argmax(axis=1)
    assert metrics.accuracy(y, proba) == pytest.approx(skm.accuracy_score(y, pred))
    assert metrics.balanced_accuracy(y, proba) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert metrics.macro_f1(y, proba) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    present = np.unique(y)
    assert len(present) == 7, "the fixture should contain every class"
    assert metrics.macro_auc(y, proba) == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert metrics.log_loss(y, proba) == pytest.approx(skm.log_loss(y, proba, labels=range(7)))
    # A weak colour model still beats chance, and balanced accuracy sits below accuracy
    # because it is not allowed to live off the majority class.
    assert 0.55 < metrics.macro_auc(y, proba) < 0.99
    assert metrics.balanced_accuracy(y, proba) < metrics.accuracy(y, proba)


def test_classification_table_and_confusion_hand_computed():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3
    table = metrics.classification_table(y, proba, classes)
    assert table.loc["a", "precision"] == pytest.approx(1.0)
    assert table.loc["a", "recall"] == pytest.approx(2 / 3)
    assert table.loc["b", "precision"] == pytest.approx(0.5)
    assert table.loc["c", "f1-score"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert table.loc["a", "support"] == 3
    counts = metrics.confusion(y, pred, classes)
    assert counts.to_numpy().tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rates = metrics.confusion(y, pred, classes, normalize=True)
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)
    assert rates.loc["a", "a"] == pytest.approx(2 / 3)
    # balanced accuracy is the mean of the diagonal of the row-normalised matrix
    assert metrics.balanced_accuracy(y, proba) == pytest.approx(np.diag(rates).mean())


def test_macro_auc_skips_absent_classes():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    assert metrics.macro_auc(y, proba) == pytest.approx(1.0)
    assert np.isnan(metrics.macro_auc(np.zeros(3, int), np.full((3, 3), 1 / 3)))


def test_sensitivity_at_specificity_known_case():
    # 100 negatives scored 0.00..0.99 and 10 positives scored 0.85..0.94. Keeping 90% of
    # negatives below the threshold means threshold 0.90: positives 0.90..0.94 are caught.
    negatives = np.arange(100) / 100
    positives = 0.85 + np.arange(10) / 100
    y = np.r_[np.zeros(100, bool), np.ones(10, bool)]
    score = np.r_[negatives, positives]
    sens, threshold = metrics.sensitivity_at_specificity(y, score, 0.9)
    assert threshold == pytest.approx(0.90)
    assert sens == pytest.approx(0.5)
    assert metrics.specificity_at_threshold(y, score, threshold) == pytest.approx((0.5, 0.9))


def test_sensitivity_at_specificity_matches_brute_force(real_predictions):
    y, proba, _ = real_predictions
    mel = datasets.HAM_CLASSES.index("mel")
    positive, score = y == mel, proba[:, mel]
    for target in (0.8, 0.9, 0.95):
        sens, _ = metrics.sensitivity_at_specificity(positive, score, target)
        best = 0.0
        for t in np.unique(score):
            s, spec = metrics.specificity_at_threshold(positive, score, t)
            if spec >= target:
                best = max(best, s)
        assert sens == pytest.approx(best)


def test_ece_of_calibrated_and_overconfident_models():
    rng = np.random.default_rng(1)
    n = 40_000
    confidence = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < confidence  # right exactly as often as it claims
    proba = np.c_[confidence, 1 - confidence]
    y = np.where(correct, 0, 1)
    assert metrics.expected_calibration_error(y, proba) < 0.01
    # Claims 90% every time but is right 60% of the time: ECE is exactly 0.3.
    proba = np.tile([0.9, 0.1], (10, 1))
    y = np.array([0] * 6 + [1] * 4)
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(0.3)
    table = metrics.reliability_table(y, proba)
    assert table["count"].sum() == 10 and len(table) == 1


def test_temperature_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(2)

    def draw(n):
        logits = rng.normal(size=(n, 5)) * 1.5
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from the true p
        sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)  # overconfident
        return y, sharp

    y_val, p_val = draw(3000)
    y_test, p_test = draw(3000)
    temperature = metrics.fit_temperature(y_val, p_val)
    assert temperature == pytest.approx(3.0, rel=0.1)
    scaled = metrics.apply_temperature(p_test, temperature)
    assert metrics.log_loss(y_test, scaled) < metrics.log_loss(y_test, p_test) - 0.1
    assert metrics.expected_calibration_error(y_test, scaled) < \
        metrics.expected_calibration_error(y_test, p_test) / 2
    np.testing.assert_array_equal(scaled.argmax(1), p_test.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1.0)
    temperature, table = metrics.calibration_summary(y_val, p_val, y_test, p_test)
    assert table["log_loss"].iloc[1] < table["log_loss"].iloc[0]
    assert table["accuracy"].iloc[0] == table["accuracy"].iloc[1]


def test_bootstrap_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(3)

    def sample(n):
        y = rng.integers(0, 2, n)
        score = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.3, n), 0.01, 0.99)
        return y, np.c_[1 - score, score]

    widths = []
    for n in (100, 3000):
        y, proba = sample(n)
        ci = metrics.bootstrap(metrics.accuracy, y, proba, rounds=300, seed=0)
        assert ci["low"] <= ci["estimate"] <= ci["high"]
        assert ci["rounds_used"] == 300
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 3  # about sqrt(30) = 5.5 times narrower
    again = metrics.bootstrap(metrics.accuracy, y, proba, rounds=300, seed=0)
    assert again == ci  # seeded: reproducible


def test_grouped_bootstrap_does_not_count_copies_as_evidence():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    proba = np.c_[1 - y * 0.7 - 0.15, y * 0.7 + 0.15]
    flip = rng.random(200) < 0.3
    proba[flip] = proba[flip][:, ::-1]
    copies = 8  # every "lesion" photographed 8 times
    y8, p8 = np.repeat(y, copies), np.repeat(proba, copies, axis=0)
    groups = np.repeat(np.arange(200), copies)
    width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
    original = metrics.bootstrap(metrics.accuracy, y, proba, rounds=400, seed=1)
    naive = metrics.bootstrap(metrics.accuracy, y8, p8, rounds=400, seed=1)
    grouped = metrics.bootstrap(metrics.accuracy, y8, p8, rounds=400, seed=1, groups=groups)
    assert width(naive) < width(original) / 2  # pretends to know more than it does
    assert width(grouped) == pytest.approx(width(original), rel=0.3)


def test_bootstrap_table_on_real_predictions_with_lesion_groups(real_predictions):
    y, proba, groups = real_predictions
    table = metrics.bootstrap_table(y, proba, rounds=60, seed=0, groups=groups)
    assert list(table.index) == list(metrics.METRICS)
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    assert (table["rounds_used"] > 50).all()
    assert metrics.format_ci(table.loc["accuracy"]).count("(") == 1


def test_from_predictions_reads_a_predictions_table():
    classes = ["benign", "malignant"]
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "split": ["val", "test", "test"],
                          "label": ["benign", "malignant", "benign"],
                          "p_benign": [0.9, 0.2, 0.6], "p_malignant": [0.1, 0.8, 0.4]})
    y, proba = metrics.from_predictions(frame, classes, split="test")
    assert y.tolist() == [1, 0] and proba.shape == (2, 2)
    with pytest.raises(ValueError, match="not in classes"):
        metrics.from_predictions(frame.assign(label="mel"), classes)
    with pytest.raises(ValueError, match="no rows"):
        metrics.from_predictions(frame, classes, split="train")
    score = metrics.class_score(np.array([[0.1, 0.2, 0.7]]), ["mel", "nv", "bcc"], {"mel", "bcc"})
    assert score == pytest.approx([0.8])


def test_leak_breakdown_separates_seen_and_new_lesions():
    classes = ["benign", "malignant"]
    table = pd.DataFrame({"image_id": list("abcdef"), "group": ["L1", "L1", "L2", "L3", "L3", "L4"],
                          "split": ["train", "test", "train", "train", "test", "test"]})
    predictions = pd.DataFrame({"image_id": ["b", "e", "f"], "split": "test",
                                "label": ["malignant", "benign", "benign"],
                                "p_benign": [0.2, 0.9, 0.3], "p_malignant": [0.8, 0.1, 0.7]})
    out = metrics.leak_breakdown(table, predictions, classes)
    assert out.loc["lesion also in train", "test images"] == 2  # b (L1) and e (L3)
    assert out.loc["lesion also in train", "accuracy"] == pytest.approx(1.0)
    assert out.loc["new lesion", "test images"] == 1
    assert out.loc["new lesion", "accuracy"] == pytest.approx(0.0)
    assert out.loc["all", "accuracy"] == pytest.approx(2 / 3)


def test_evaluate_run_reads_manifest_and_scores_test_split(real_predictions, tmp_path):
    from helpers import run_folders

    y, proba, groups = real_predictions
    classes = list(datasets.HAM_CLASSES)
    ids = [f"img{i}" for i in range(len(y))]
    predictions = pd.DataFrame({"image_id": ids, "split": "test",
                                "label": pd.Categorical([classes[k] for k in y], categories=classes)})
    for k, c in enumerate(classes):
        predictions[f"p_{c}"] = proba[:, k]
    manifest = {"task": "ham10000", "backbone": "colour_stats", "variant": "frozen",
                "classes": classes, "image_size": [24, 32], "wall_time_s": 1.0,
                "weights": {"source": "none", "file": None, "sha256": None}}
    run = run_folders.RunFolder(path=tmp_path / "ham10000__colour_stats__frozen",
                                manifest=manifest, metrics={}, history=pd.DataFrame(),
                                predictions=predictions)
    row = metrics.evaluate_run(run, groups=dict(zip(ids, groups)), rounds=40, seed=0)
    assert row["weights"] == "none" and row["test images"] == len(y)
    assert row["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy(y, proba))
    assert row["macro_auc low"] <= row["macro_auc"] <= row["macro_auc high"]
    mel = classes.index("mel")
    assert row["positive class"] == "mel"
    assert row["sensitivity at 90% spec."] == pytest.approx(
        metrics.sensitivity_at_specificity(y == mel, proba[:, mel], 0.9)[0])


def test_nearest_neighbour_memoriser_copies_the_closest_label():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    labels = np.array([0, 1, 2])
    test = np.array([[5.0, 0.1], [0.1, 3.0], [1.0, 1.1]])  # scale does not matter (cosine)
    proba = metrics.nearest_neighbour_proba(train, labels, test, 3)
    assert proba.argmax(1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    assert metrics.binary_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score))
    assert np.isnan(metrics.binary_auc(np.zeros(5, bool), np.arange(5)))


def test_nearest_neighbour_memoriser_votes_among_k_neighbours():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 2])
    test = np.array([[1.0, 0.0]])
    np.testing.assert_array_equal(metrics.nearest_neighbour_proba(train, labels, test, 3, k=3),
                                  [[1, 2, 0]])  # the nearest says 0, the next two outvote it
    np.testing.assert_array_equal(metrics.nearest_neighbour_proba(train, labels, test, 3),
                                  [[1, 0, 0]])
    with pytest.raises(ValueError, match="k must be in 1..4"):
        metrics.nearest_neighbour_proba(train, labels, test, 3, k=5)
