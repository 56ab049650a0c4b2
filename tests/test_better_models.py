"""Chapter 09's parts on real data: the metadata encoding, the imbalance corrections, greedy
ensembles, paired intervals, and derived model folders that the registry scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import (compare, datasets, derived, distill, ensemble, heads, imbalance, metadata,
                     metrics, results, run_folders, scoring, splits)

CLASSES = list(datasets.HAM_CLASSES)


# --- metadata ------------------------------------------------------------------------------------

def test_encoding_of_real_rows_flags_what_is_missing(ham_table):
    table = ham_table.copy()
    enc = metadata.encode(table)
    names = metadata.feature_names()
    assert enc.shape == (len(table), len(names)) and enc.dtype == np.float32
    col = {n: enc[:, i] for i, n in enumerate(names)}
    age = pd.to_numeric(table["age"], errors="coerce")
    np.testing.assert_allclose(col["age / 100"][age.notna()], age[age.notna()] / 100, rtol=1e-6)
    assert (col["age missing"] == age.isna()).all() and age.isna().sum() > 0
    assert (col["age / 100"][age.isna()] == 0).all()
    # exactly one of each one-hot group (value or missing flag) is on, on every real row
    sex = [c for c in names if c.startswith("sex")]
    site = [c for c in names if c.startswith("site")]
    assert (np.stack([col[c] for c in sex]).sum(0) == 1).all()
    assert (np.stack([col[c] for c in site]).sum(0) == 1).all()
    unknown = table["localization"].astype(str).eq("unknown").to_numpy()
    assert unknown.sum() > 0 and (col["site missing"][unknown] == 1).all()
    face = table["localization"].astype(str).eq("face").to_numpy()
    assert (col["site face"] == face).all()


def test_encoding_does_not_depend_on_the_rows_it_sees(ham_table):
    one = metadata.encode(ham_table.iloc[:5])
    again = metadata.encode(ham_table.iloc[:500])[:5]
    np.testing.assert_array_equal(one, again)


def test_bad_metadata_is_refused_with_the_row(ham_table):
    bad = ham_table.iloc[:4].copy()
    bad.loc[bad.index[2], "age"] = 430
    with pytest.raises(ValueError, match="row 2 has 430"):
        metadata.encode(bad)
    with pytest.raises(ValueError, match="lacks the metadata columns"):
        metadata.encode(ham_table[["image_id", "age"]])


def test_a_fused_model_on_images_equals_features_then_head(ham_sample):
    import keras

    from helpers import backbones, images

    keras.utils.set_random_seed(0)
    model, _ = backbones.build_model("mobilenet_025", (48, 64), len(CLASSES), weights=None)
    head = metadata.fused_head(int(model.get_layer("features").output.shape[-1]), len(CLASSES))
    full = heads.on_images(model, head)
    x = images.load_batch(ham_sample["path"][:4], (48, 64))
    meta = metadata.encode(ham_sample.iloc[:4])
    feats = keras.Model(model.input, model.get_layer("features").output).predict(x, verbose=0)
    np.testing.assert_allclose(full.predict([x, meta], verbose=0),
                               head.predict([feats, meta], verbose=0), atol=1e-6)


# --- class imbalance -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(1)
    y = rng.choice(4, 400, p=[0.7, 0.15, 0.1, 0.05])
    proba = rng.dirichlet(np.ones(4), 400) + np.eye(4)[y] * 0.6 + np.array([0.8, 0, 0, 0])
    return y, proba / proba.sum(1, keepdims=True), rng.integers(0, 150, 400).astype(str)


def test_logit_adjustment_divides_by_the_prior(scored):
    y, proba, _ = scored
    prior = imbalance.class_prior(y, 4)
    np.testing.assert_allclose(imbalance.logit_adjusted(proba, prior, 0.0), proba, atol=1e-12)
    manual = proba / prior
    np.testing.assert_allclose(imbalance.logit_adjusted(proba, prior, 1.0),
                               manual / manual.sum(1, keepdims=True), atol=1e-12)


def test_logit_adjustment_raises_balanced_accuracy_of_a_prior_biased_model(scored):
    y, proba, _ = scored
    prior = imbalance.class_prior(y, 4)
    tau, by_tau = imbalance.choose_tau(y, proba, prior)
    assert tau > 0 and by_tau[tau] > by_tau[0.0] + 0.05
    assert by_tau[tau] == max(by_tau.values())


def test_a_class_missing_from_training_has_no_prior():
    with pytest.raises(ValueError, match=r"classes \[2\] never occur"):
        imbalance.class_prior([0, 1, 1, 3], 4)


def test_balanced_softmax_is_cross_entropy_of_the_shifted_softmax(scored):
    from keras import ops

    y, proba, _ = scored
    prior = imbalance.class_prior(y, 4)
    loss = ops.convert_to_numpy(imbalance.balanced_softmax_loss(prior)(y, proba.astype("f4")))
    shifted = proba * prior
    shifted /= shifted.sum(1, keepdims=True)
    np.testing.assert_allclose(loss, -np.log(shifted[np.arange(len(y)), y]), rtol=1e-4)


def test_distillation_loss_is_the_labels_at_alpha_one_and_the_teacher_at_alpha_zero(scored):
    from keras import ops

    y, proba, _ = scored
    k = proba.shape[1]
    onehot = np.eye(k)[y]
    weights = np.array([0.5, 1.0, 2.0, 4.0])

    def loss(teacher, **kw):
        y_true = np.concatenate([onehot, teacher], axis=1).astype("f4")
        return ops.convert_to_numpy(distill.distillation_loss(k, **kw)(y_true, proba.astype("f4")))

    ce = -np.log(proba[np.arange(len(y)), y])
    np.testing.assert_allclose(loss(proba, alpha=1.0, class_weight=weights), ce * weights[y],
                               rtol=1e-4)
    # alpha 0: only the teacher matters; a student equal to its teacher has nothing to learn
    np.testing.assert_allclose(loss(proba, alpha=0.0, temperature=3.0), 0.0, atol=1e-5)
    assert (loss(np.roll(proba, 1, axis=1), alpha=0.0, temperature=3.0) > 1e-3).all()
    with pytest.raises(ValueError, match="temperature"):
        distill.distillation_loss(k, temperature=0)


# --- ensembles and paired intervals ---------------------------------------------------------------

def test_greedy_selection_adds_what_helps_and_stops(scored):
    y, proba, _ = scored
    rng = np.random.default_rng(2)
    noisy = {f"m{i}": (proba + rng.random(proba.shape) * 1.5) for i in range(3)}
    noisy = {k: v / v.sum(1, keepdims=True) for k, v in noisy.items()}
    members, steps = ensemble.greedy_members(y, {"copy": proba, **noisy}, max_members=4)
    assert members[0] == "copy" or steps[0]["val_balanced_accuracy"] >= \
        metrics.balanced_accuracy(y, proba)
    scores = [s["val_balanced_accuracy"] for s in steps]
    assert all(b > a for a, b in zip(scores, scores[1:])), "each step must raise the score"
    # the same run twice adds nothing: selection stops at one member
    assert ensemble.greedy_members(y, {"a": proba, "b": proba.copy()})[0] == ["b"]
    with pytest.raises(ValueError, match="different shapes"):
        ensemble.average([proba, proba[:10]])


def test_an_ensemble_model_averages_its_members_on_real_images(ham_sample, tmp_path):
    import keras

    from helpers import backbones, images

    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        members.append(backbones.build_model("mobilenet_025", (48, 64), 7, weights=None,
                                             seed=seed)[0])
    x = images.load_batch(ham_sample["path"][:3], (48, 64))
    path = tmp_path / "ensemble.keras"
    ensemble.ensemble_model(members).save(path)  # two members with the same layer names
    together = keras.saving.load_model(path).predict(x, verbose=0)
    np.testing.assert_allclose(together, np.mean([m.predict(x, verbose=0) for m in members],
                                                 axis=0), atol=1e-6)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero(scored):
    y, proba, lesions = scored
    same = compare.paired_difference(y, proba, proba.copy(), groups=lesions, rounds=100)
    assert same["estimate"] == same["low"] == same["high"] == 0.0
    prior = imbalance.class_prior(y, 4)
    better = compare.paired_difference(y, imbalance.logit_adjusted(proba, prior, 1.0), proba,
                                       groups=lesions, rounds=300)
    assert better["low"] > 0, "the adjusted model is better on every resample of lesions"
    assert better["estimate"] == pytest.approx(
        metrics.balanced_accuracy(y, imbalance.logit_adjusted(proba, prior, 1.0))
        - metrics.balanced_accuracy(y, proba))


def test_score_table_chooses_on_validation_only(scored):
    y, proba, lesions = scored
    prior = imbalance.class_prior(y, 4)
    half = len(y) // 2
    ys = {"val": y[:half], "test": y[half:]}
    adjusted = imbalance.logit_adjusted(proba, prior, 1.0)
    cands = {"plain": {"val": proba[:half], "test": proba[half:]},
             # best on test, worst on validation: must not be chosen
             "test-lucky": {"val": np.roll(proba[:half], 1, axis=0), "test": adjusted[half:]}}
    table = compare.score_table(cands, ys, lesions[half:], rounds=50)
    assert table.loc["plain", "chosen on val"] == "yes"
    assert table.loc["test-lucky", "test_balanced_accuracy"] > \
        table.loc["plain", "test_balanced_accuracy"]


# --- derived folders in the registry ------------------------------------------------------------

def test_derived_folders_are_scored_by_the_registry_and_never_chosen(tmp_path, ham_sample):
    import keras

    table = ham_sample.assign(split=splits.grouped_split(ham_sample, seed=1))
    parts = {p: table[table["split"] == p].reset_index(drop=True) for p in ("val", "test")}
    rng = np.random.default_rng(0)
    probs = {p: rng.dirichlet(np.ones(7), len(parts[p])) for p in parts}
    keras.utils.set_random_seed(0)
    model = heads.image_head(8, 7)
    base = {"task": "ham10000", "dataset": "ham10000", "classes": CLASSES,
            "backbone": "mobilenet_025", "backbone_display": "MobileNet (alpha 0.25)",
            "weights": {"source": "file", "sha256": "x"}, "pretrained": True,
            "image_size": [48, 64], "profile": "smoke", "seed": 42,
            "split_hash": splits.table_hash(table), "planned_epochs": {"finetune": 1},
            "provenance": {"commit": "abc"}, "n_images": {}}
    folder = derived.save(derived.path(tmp_path, "ham10000", "ensemble__2-members"), model,
                          base=base, variant="ensemble of 2", inputs="image",
                          derived_from=["a", "b", "a"], parts=parts, probs=probs, flipped=probs,
                          history=pd.DataFrame({"step": [1]}), how="test", wall_time_s=1.0)
    assert derived.find(tmp_path) == [folder] and derived.find(tmp_path, "melanoma10k") == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["derived"] and manifest["derived_from"] == ["a", "b"]   # no repeats
    # made by this code, not by the run it starts from
    assert manifest["provenance"]["commit"] == run_folders.provenance()["commit"] != "abc"
    run = run_folders.load_run(folder)
    groups = dict(zip(table["image_id"].astype(str), table["group"].astype(str)))
    entry = results.run_entry(run, groups, rounds=20)
    assert entry["scores"]["test"]["balanced_accuracy"]["estimate"] == pytest.approx(
        metrics.balanced_accuracy(scoring.label_indices(parts["test"], CLASSES),
                                  probs["test"]))
    registry = {"runs": [], "derived": [{**entry, "inputs": "image", "derived_from": ["a"]}]}
    registry["configs"] = results.seed_spread(registry["runs"])
    with pytest.raises(ValueError, match="no pretrained"):
        results.choose(registry, "ham10000")          # derived models are never candidates
    frame = results.derived_frame(registry)
    assert list(frame["model"]) == ["ensemble of 2"] and "[" in frame.iloc[0][
        "test bal. acc., 1 view"]


def test_keep_entries_adds_only_what_is_missing():
    now = {"runs": [{"run": "a", "v": 2}], "derived": []}
    earlier = {"runs": [{"run": "a", "v": 1}, {"run": "m", "v": 1}],
               "derived": [{"run": "d", "v": 1}]}
    assert results.keep_entries(now, earlier) == ["m", "d"]
    assert [e["v"] for e in now["runs"]] == [2, 1] and now["kept"] == ["m", "d"]


def test_without_drops_named_entries_and_refuses_unknown_names():
    earlier = {"runs": [{"run": "a"}, {"run": "m"}], "derived": [{"run": "d"}], "kept": []}
    left = results.without(earlier, ["m", "d"])
    assert [e["run"] for e in left["runs"]] == ["a"] and left["derived"] == []
    assert len(earlier["runs"]) == 2  # the registry passed in is not changed
    with pytest.raises(ValueError, match="typo: not in the registry; it holds a, d, m"):
        results.without(earlier, ["typo"])
