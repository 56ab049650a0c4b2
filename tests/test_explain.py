"""helpers.explain on a small model really trained on real HAM10000 images.

A model with random weights gives SHAP values of (almost) zero and Grad-CAM maps of nothing, so
the fixture trains one: the book's own architecture (helpers.backbones.build_model: baked
preprocessing, MobileNet alpha 0.25 with ImageNet weights as a *nested* backbone, pooling, softmax
head), head only, melanoma vs naevus, a few hundred images at 96x128, saved and loaded back as a
run folder's model.keras is. About half a minute on two cores.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from helpers import explain

SIZE = (96, 128)
CLASSES = ("nv", "mel")


@pytest.fixture(scope="session")
def lesions(ham_table):
    """About 150 lesions each of mel and nv (one image per lesion), split into train and test."""
    one = ham_table.drop_duplicates("group")
    table = pd.concat([one[one["label"] == c].sample(150, random_state=1) for c in CLASSES])
    table = table.sample(frac=1.0, random_state=2).reset_index(drop=True)
    table["split"] = np.where(np.arange(len(table)) < 240, "train", "test")
    return table


@pytest.fixture(scope="session")
def trained(lesions, tmp_path_factory, mobilenet_025_weights):
    """(model, train images, test images, test table): trained, saved and loaded back."""
    import keras

    from helpers import backbones

    keras.utils.set_random_seed(0)
    model, _ = backbones.build_model("mobilenet_025", SIZE, len(CLASSES),
                                     weights=str(mobilenet_025_weights), dropout=0.1)
    backbones.set_trainable(model, "mobilenet_025", "frozen")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images = explain.load_images(lesions["path"].tolist(), SIZE)
    labels = np.asarray([CLASSES.index(str(c)) for c in lesions["label"]], dtype=np.int32)
    train = (lesions["split"] == "train").to_numpy()
    model.fit(images[train], labels[train], epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    test = lesions[~train].reset_index(drop=True)
    accuracy = (loaded.predict(images[~train], verbose=0).argmax(1) == labels[~train]).mean()
    assert accuracy > 0.6, f"the fixture model did not learn (test accuracy {accuracy:.2f})"
    return loaded, images[train], images[~train], test


@pytest.fixture(scope="session")
def explained(trained):
    """The three methods on 4 test images (2 mel, 2 nv), explained for their true class."""
    model, train_images, test_images, test = trained
    rows = np.concatenate([np.flatnonzero(test["label"] == c)[:2] for c in CLASSES])
    class_index = [CLASSES.index(str(c)) for c in test["label"].iloc[rows]]
    result = explain.explain(model, test_images[rows], background=train_images[:16], nsamples=8,
                             class_index=class_index, classes=CLASSES, seed=0)
    return result, test.iloc[rows].reset_index(drop=True)


# --- the feature map Grad-CAM uses ---------------------------------------------------------------

def test_conv_layer_is_found_inside_the_nested_backbone(trained):
    model, _, test_images, _ = trained
    assert explain.find_conv_layer(model) == ("backbone_mobilenet_025", "conv_pw_13_relu")
    features, probs = explain.feature_model(model)(test_images[:3])
    assert tuple(features.shape) == (3, 3, 4, 256)  # 96x128 / 32
    np.testing.assert_allclose(probs.numpy(), model.predict(test_images[:3], verbose=0),
                               atol=1e-5)


def test_conv_layer_of_a_flat_model_and_a_model_without_one():
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    x = keras.layers.Conv2D(8, 3, name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    flat = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    assert explain.find_conv_layer(flat) == ("last",)
    assert explain._resolve_layer(flat, "first") == ("first",)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        explain._resolve_layer(flat, "nope")
    dense_in = keras.Input((5,))
    no_conv = keras.Model(dense_in, keras.layers.Dense(2)(dense_in))
    with pytest.raises(ValueError, match="no 4-D convolutional feature map"):
        explain.find_conv_layer(no_conv)


def test_gradcam_maps_are_in_unit_range_and_show_something(explained):
    result, _ = explained
    cam = result.maps["gradcam"]
    assert cam.shape == (4, *SIZE)
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert (cam.reshape(4, -1).max(axis=1) > 0.5).all(), "each map is scaled to its maximum"
    assert (np.ptp(cam.reshape(4, -1), axis=1) > 0).all()
    assert result.conv_layer == ("backbone_mobilenet_025", "conv_pw_13_relu")


# --- SHAP ---------------------------------------------------------------------------------------

def test_gradient_shap_equals_shap_on_the_full_model(trained):
    """Our one-output class selector gives SHAP's own values for that output of the full model."""
    import shap

    model, train_images, test_images, _ = trained
    background = train_images[:8]
    reference = shap.GradientExplainer(model, background).shap_values(
        test_images[:1], nsamples=6, rseed=5)                          # (1, H, W, 3, classes)
    for class_id in range(len(CLASSES)):
        ours = explain.gradient_shap(model, test_images[:1], [class_id], background,
                                     nsamples=6, seed=5 - class_id)
        assert ours.shape == (1, *SIZE, 3)
        assert np.abs(ours).max() > 1e-4, "a trained model has non-zero SHAP values"
        np.testing.assert_allclose(ours[0], reference[0, ..., class_id], rtol=1e-4, atol=1e-7)


def test_partition_shap_values_add_up_to_the_prediction(explained):
    result, _ = explained
    values = result.values["partition_shap"]
    assert values.shape == (4, *SIZE, 3)
    assert (np.abs(values).reshape(4, -1).max(axis=1) > 0).all()
    explained_p = result.probabilities[np.arange(4), result.class_index]
    total = values.sum(axis=(1, 2, 3)) + result.base_values["partition_shap"]
    np.testing.assert_allclose(total, explained_p, atol=1e-4)


def test_explain_returns_arrays_ready_to_plot(explained, trained):
    result, rows = explained
    assert result.methods == list(explain.METHODS)
    assert result.explained_class == [str(c) for c in rows["label"]]
    for method in explain.METHODS:
        assert result.maps[method].shape == (4, *SIZE)
        assert np.isfinite(result.maps[method]).all()
    np.testing.assert_allclose(result.maps["gradient_shap"],
                               result.values["gradient_shap"].sum(axis=-1), rtol=1e-5, atol=1e-8)
    assert np.abs(result.maps["gradient_shap"]).max() > 1e-4
    model = trained[0]
    predicted = explain.explain(model, result.images[:2], background=trained[1][:4], nsamples=2,
                                methods=["gradcam"])
    assert list(predicted.class_index) == list(predicted.probabilities.argmax(axis=1))
    with pytest.raises(ValueError, match="unknown methods"):
        explain.explain(model, result.images[:1], background=trained[1][:4], methods=["lime"])
    import matplotlib.pyplot as plt

    masks = np.zeros((4, *SIZE), dtype=bool)
    fig = explain.plot_explanations(result, [0, 2], masks=masks)
    assert len(fig.axes) == 2 * (1 + len(explain.METHODS))
    plt.close(fig)


# --- is the explanation on the lesion? ------------------------------------------------------------

def test_share_in_mask_on_hand_made_maps():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2, :] = True                                    # top half: chance level 0.5
    assert explain.chance_share(mask)[0] == 0.5
    inside = np.where(mask, 1.0, 0.0)
    uniform = np.ones((1, 4, 4))
    mixed = np.zeros((1, 4, 4))
    mixed[0, 0, 0], mixed[0, 3, 3], mixed[0, 1, 1] = 3.0, 1.0, -10.0   # negative ignored
    negative = -np.ones((1, 4, 4))
    maps = np.concatenate([inside, uniform, mixed, negative])
    share = explain.positive_share_in_mask(maps, np.repeat(mask, 4, axis=0))
    np.testing.assert_allclose(share[:3], [1.0, 0.5, 0.75])
    assert np.isnan(share[3]), "no positive attribution: no share"
    with pytest.raises(ValueError, match="differ in shape"):
        explain.positive_share_in_mask(maps, mask)


def test_on_lesion_table_agrees_with_the_share(explained):
    result, rows = explained
    masks = explain.load_masks(rows["image_id"].tolist(), SIZE)
    table = explain.on_lesion_table(result, masks, rows["image_id"].tolist())
    assert len(table) == 4 * len(explain.METHODS)
    cam = table[table["method"] == explain.METHOD_LABELS["gradcam"]]
    np.testing.assert_allclose(cam["on_lesion"],
                               explain.positive_share_in_mask(result.maps["gradcam"], masks))
    np.testing.assert_allclose(cam["lift"], cam["on_lesion"] / cam["chance"])
    summary = explain.summarize_on_lesion(table)
    assert list(summary.index) == [explain.METHOD_LABELS[m] for m in explain.METHODS]
    assert (summary["images"] == 4).all()


def test_masks_are_loaded_binary_at_the_model_size(ham_table):
    ids = ham_table["image_id"].iloc[:3].tolist()
    masks = explain.load_masks(ids, (75, 100))
    assert masks.shape == (3, 75, 100) and masks.dtype == bool
    share = explain.chance_share(masks)
    assert ((share > 0) & (share < 1)).all(), "a lesion covers part of the image, not all of it"
    with pytest.raises(FileNotFoundError, match="ISIC_0000000"):
        explain.load_masks(["ISIC_0000000"], (75, 100))


# --- sanity check -------------------------------------------------------------------------------

def test_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 5, 5))
    np.testing.assert_allclose(explain.rank_correlation(a, a), 1.0)
    np.testing.assert_allclose(explain.rank_correlation(a, -a), 1.0)             # absolute values
    flipped = explain.rank_correlation(np.abs(a), -np.abs(a), absolute=False)
    np.testing.assert_allclose(flipped, -1.0)
    assert np.isnan(explain.rank_correlation(a, np.zeros_like(a))).all()


def test_sanity_verdicts():
    assert explain.sanity_verdict(0.93) == "FLAG: barely changes"
    assert explain.sanity_verdict(0.93, rerun=0.95) == "FLAG: barely changes"
    assert explain.sanity_verdict(0.30, rerun=0.35) == "FLAG: change within re-run noise"
    assert explain.sanity_verdict(0.30, rerun=1.0) == "ok: changes"
    assert explain.sanity_verdict(0.30) == "ok: changes"
    assert explain.sanity_verdict(float("nan"), rerun=1.0) == "no map to compare"


def test_randomising_top_layers_changes_maps_not_the_original(trained, explained):
    model, train_images, _, _ = trained
    result, _ = explained
    before = model.predict(result.images, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    scrambled, names = explain.randomize_top_layers(model, 5, seed=1)
    assert names == ["conv_dw_13", "conv_dw_13_bn", "conv_pw_13", "conv_pw_13_bn", "head"]
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)                  # the original is untouched
    np.testing.assert_allclose(model.predict(result.images, verbose=0), before, atol=1e-6)
    assert not np.allclose(scrambled.predict(result.images, verbose=0), before, atol=1e-3)
    # same seed, same background: only the model differs
    same = explain.gradient_shap(model, result.images, result.class_index, train_images[:16],
                                 nsamples=8, seed=3)
    again = explain.gradient_shap(model, result.images, result.class_index, train_images[:16],
                                  nsamples=8, seed=3)
    other = explain.gradient_shap(scrambled, result.images, result.class_index,
                                  train_images[:16], nsamples=8, seed=3)
    np.testing.assert_allclose(explain.rank_correlation(same.sum(-1), again.sum(-1)), 1.0)
    assert np.nanmean(explain.rank_correlation(same.sum(-1), other.sum(-1))) < 0.9
    cam = explain.gradcam(scrambled, result.images, result.class_index)
    assert not np.allclose(cam, result.maps["gradcam"], atol=0.05)


def test_sanity_check_table(trained, explained):
    model, train_images, _, _ = trained
    result, _ = explained
    small = explain.Explanation(images=result.images[:2], class_index=result.class_index[:2],
                                probabilities=result.probabilities[:2], classes=result.classes,
                                maps={m: v[:2] for m, v in result.maps.items()
                                      if m != "partition_shap"},
                                conv_layer=result.conv_layer)
    table, redone = explain.sanity_check(model, small, background=train_images[:16], nsamples=8,
                                         levels=(1,), seed=0)
    assert len(redone) == 2 and len(table) == 2 * 2
    rerun = table[table["layers_scrambled"] == 0].set_index("method")["spearman_mean"]
    assert rerun[explain.METHOD_LABELS["gradcam"]] == pytest.approx(1.0)   # deterministic
    scrambled = table[table["layers_scrambled"] == 1].set_index("method")
    assert (scrambled["images"] == 2).all()
    for method, row in scrambled.iterrows():  # each verdict is the rule applied to its numbers
        assert row["verdict"] == explain.sanity_verdict(row["spearman_mean"], rerun=rerun[method])
    # empty maps are counted from the redone maps: flat after scrambling, not flat before
    name = next(k for k in redone if k.startswith("top 1 layer"))
    for key, label in explain.METHOD_LABELS.items():
        if label not in scrambled.index:
            continue
        flat = np.ptp(redone[name].maps[key].reshape(2, -1), axis=1) == 0
        was = np.ptp(small.maps[key].reshape(2, -1), axis=1) == 0
        assert scrambled.loc[label, "empty_maps"] == int((flat & ~was).sum())


# --- picking examples ---------------------------------------------------------------------------

def test_pick_examples_groups_by_class_and_outcome():
    predictions = pd.DataFrame({
        "image_id": [f"ISIC_{i}" for i in range(6)],
        "split": ["test"] * 5 + ["val"],
        "label": ["mel", "mel", "nv", "nv", "nv", "mel"],
        "p_nv": [0.2, 0.7, 0.9, 0.6, 0.3, 0.1],
        "p_mel": [0.8, 0.3, 0.1, 0.4, 0.7, 0.9],
    })
    picked = explain.pick_examples(predictions, ["nv", "mel"], 1)
    outcome = dict(zip(picked["image_id"], picked["outcome"]))
    assert outcome["ISIC_0"] == "correct" and outcome["ISIC_1"] == "wrong"
    assert outcome["ISIC_4"] == "wrong"
    assert sum(i in ("ISIC_2", "ISIC_3") for i in outcome) == 1      # one correct nv
    assert "ISIC_5" not in outcome                                   # validation rows excluded
    assert len(picked) == 4
    with pytest.raises(ValueError, match="lack columns"):
        explain.pick_examples(predictions, ["nv", "mel", "bcc"], 1)
