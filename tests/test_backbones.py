"""The backbone registry: preprocessing contracts, weights resolution, model surgery.

Runs on real HAM10000 images and real (small) Keras models; no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backbones, images

REQUIRED = ["densenet121", "inception_v3", "xception", "resnet50", "mobilenet_v2",
            "efficientnet_b0", "mobilenet_025"]
SIZE = (75, 100)


@pytest.fixture(scope="module")
def pixels(ham_table):
    """Four real HAM10000 images, one per a few classes, as float32 RGB 0-255 at 75x100."""
    rows = ham_table.groupby("label", observed=True).head(1).iloc[:4]
    return images.load_batch(rows["path"].tolist(), SIZE)


@pytest.fixture
def weights_env(monkeypatch):
    import os

    if not os.environ.get("SKINBOOK_WEIGHTS"):
        pytest.skip("SKINBOOK_WEIGHTS is not set (the offline ImageNet weights folder)")
    monkeypatch.setenv("SKINBOOK_OFFLINE", "1")


def test_registry_has_every_backbone_of_the_book():
    assert set(REQUIRED) <= set(backbones.REGISTRY)
    table = backbones.summary_table()
    assert set(REQUIRED) <= set(table.index)
    for name in REQUIRED:
        entry = backbones.get(name)
        assert 0 < entry.min_size <= entry.default_size
        assert entry.preprocessing in backbones.PREPROCESSING
    with pytest.raises(ValueError, match="Unknown backbone 'vgg16'.*densenet121"):
        backbones.get("vgg16")


@pytest.mark.parametrize("name", sorted(backbones.REGISTRY))
def test_baked_preprocessing_matches_keras_preprocess_input(name, pixels):
    """The layers inside the model do exactly what keras.applications.<x>.preprocess_input does."""
    entry = backbones.get(name)
    baked = np.asarray(backbones.preprocessor(name, SIZE)(pixels))
    reference = entry.preprocess_reference(pixels)
    assert baked.shape == reference.shape
    np.testing.assert_allclose(baked, reference, rtol=1e-5, atol=1e-4)
    if entry.preprocessing != "none":  # the contract really changes the pixels
        assert np.abs(reference - pixels).max() > 1.0


def test_efficientnet_rescales_inside_its_own_graph():
    import keras

    net = backbones.build_backbone("efficientnet_b0", SIZE, backbones.WeightsInfo("none"))
    kinds = {type(layer).__name__ for layer in net.layers[:4]}
    assert {"Rescaling", "Normalization"} <= kinds
    assert isinstance(net, keras.Model)


@pytest.mark.parametrize("name", ["mobilenet_025", "resnet50"])
def test_full_model_applies_preprocessing_before_the_backbone(name, pixels, weights_env):
    """Model on raw pixels == backbone on keras-preprocessed pixels (same weights)."""
    import keras

    model, info = backbones.build_model(name, SIZE, 7)
    feats = keras.Model(model.input, model.get_layer("features").output)
    net = backbones.backbone_of(model)
    reference = np.asarray(net(backbones.get(name).preprocess_reference(pixels))).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(feats(pixels)), reference, rtol=1e-3, atol=1e-3)


def test_local_weights_resolve_to_the_file_with_its_hash(weights_env):
    info = backbones.resolve_weights("mobilenet_025")
    assert info.source == "file" and info.file == "mobilenet_2_5_224_tf_no_top.h5"
    assert info.sha256.startswith("dbdb03ee2a22fd89")
    assert info.to_dict() == {"source": "file", "file": info.file, "sha256": info.sha256}
    assert backbones.resolve_weights("densenet121").sha256.startswith("f3c6a87655f2a7fc")


def test_missing_weights_fall_back_to_random_with_a_visible_notice(weights_env, capsys):
    info = backbones.resolve_weights("inception_v3")
    assert info.source == "none" and not info.pretrained and info.keras_arg is None
    out = capsys.readouterr().out
    assert "NOTICE" in out and "InceptionV3" in out and "RANDOM" in out
    assert backbones.resolve_weights("mobilenet_025", None).to_dict() == {
        "source": "none", "file": None, "sha256": None}


def test_local_weights_are_really_loaded(weights_env, pixels):
    """A model built from the weights file differs from a random one and is reproducible."""
    a, _ = backbones.build_model("mobilenet_025", SIZE, 7, weights="imagenet")
    b, _ = backbones.build_model("mobilenet_025", SIZE, 7, weights="imagenet")
    r, _ = backbones.build_model("mobilenet_025", SIZE, 7, weights=None)
    wa, wb, wr = (backbones.backbone_of(m).get_weights()[0] for m in (a, b, r))
    np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(wa, wr)


def test_input_size_below_the_minimum_is_rejected():
    with pytest.raises(ValueError, match="InceptionV3 needs inputs of at least 75x75"):
        backbones.build_model("inception_v3", (64, 64), 7, weights=None)


def test_set_trainable_keeps_batchnorm_frozen_and_unfreezes_top_blocks():
    import keras

    model, _ = backbones.build_model("densenet121", SIZE, 7, weights=None)
    net = backbones.backbone_of(model)
    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    backbones.set_trainable(model, "densenet121", "frozen")
    frozen = len(model.trainable_weights)
    assert frozen == 2  # the head's kernel and bias
    backbones.set_trainable(model, "densenet121", "auto")  # large backbone -> top blocks
    names = [layer.name for layer in net.layers]
    start = names.index("conv5_block1_0_bn")
    assert all(not layer.trainable for layer in net.layers[:start])
    assert any(layer.trainable for layer in net.layers[start:])
    assert not any(layer.trainable for layer in bns)
    backbones.set_trainable(model, "densenet121", "all", pretrained=False)
    assert all(layer.trainable for layer in bns)  # random init: statistics must train


def test_set_trainable_with_bn_momentum_trains_only_the_unfrozen_batchnorm():
    import keras

    model, _ = backbones.build_model("densenet121", SIZE, 7, weights=None)
    net = backbones.backbone_of(model)
    backbones.set_trainable(model, "densenet121", "top", bn_momentum=0.9)
    start = [layer.name for layer in net.layers].index("conv5_block1_0_bn")
    bns = [(i, layer) for i, layer in enumerate(net.layers)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable and layer.momentum == 0.9 for i, layer in bns if i >= start)
    assert not any(layer.trainable for i, layer in bns if i < start)
    assert all(layer.momentum == 0.99 for i, layer in bns if i < start)  # Keras' default


def test_saved_model_loads_without_helpers_and_takes_raw_pixels(tmp_path, pixels):
    """Built-in layers only: a plain keras.saving.load_model (safe mode) reproduces outputs."""
    import keras

    model, _ = backbones.build_model("resnet50", SIZE, 2, weights=None)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.input_shape == (None, *SIZE, 3)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0),
                               rtol=1e-5, atol=1e-6)
