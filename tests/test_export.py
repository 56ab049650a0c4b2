"""TFLite export: the files, the contract, and that the models compute what Keras computes.

The model is small but real: MobileNet (alpha 0.25) with its ImageNet weights from
``$SKINBOOK_WEIGHTS`` and a softmax head trained on real HAM10000 images. It is built once per
session into a temporary run folder (``tiny_run``; the prediction and web-app tests reuse it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import datasets, export, images
from helpers.predict import contract_path

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (64, 80)
CLASSES = list(datasets.HAM_CLASSES)


def build_tiny_run(folder: Path, table, weights: Path) -> Path:
    """A run folder like chapter 03's: model.keras (RGB 0-255 in, softmax out) + manifest."""
    import keras

    keras.utils.set_random_seed(0)
    height, width = IMAGE_SIZE
    base = keras.applications.MobileNet(alpha=0.25, weights=str(weights), include_top=False,
                                        input_shape=(height, width, 3))
    inputs = keras.Input((height, width, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(base(scaled, training=False))
    head = keras.layers.Dense(len(CLASSES), activation="softmax", name="probs")
    model = keras.Model(inputs, head(pooled))
    x = images.load_batch(list(table["path"]), IMAGE_SIZE)
    y = table["label"].astype(str).map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    features = keras.Model(inputs, pooled).predict(x, verbose=0)
    head_only = keras.Sequential([keras.Input((features.shape[1],)), head])
    head_only.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    head_only.fit(features, y, epochs=40, batch_size=16, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    manifest = {"task": "ham10000", "dataset": "ham10000", "classes": CLASSES,
                "backbone": "mobilenet_025", "variant": "test", "image_size": list(IMAGE_SIZE),
                "profile": "test", "weights": {"source": "file", "file": weights.name}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    np.save(folder / "images.npy", x)
    np.save(folder / "labels.npy", y)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, ham_sample, mobilenet_025_weights) -> Path:
    """The tiny real run folder, exported to float32 and int8 TFLite (built once per session)."""
    folder = tmp_path_factory.getbasetemp() / "tiny_run"
    if not (folder / "done").exists():
        build_tiny_run(folder, ham_sample, mobilenet_025_weights)
        calibration = np.load(folder / "images.npy")[::2]
        export.export_run(folder, calibration, variants=("float32", "int8"))
        (folder / "done").write_text("ok")
    return folder


@pytest.fixture(scope="session")
def tiny_keras(tiny_run):
    """The tiny run's Keras model, loaded once."""
    return export.load_keras(tiny_run)


@pytest.fixture(scope="session")
def tiny_data(tiny_run) -> tuple[np.ndarray, np.ndarray]:
    return np.load(tiny_run / "images.npy"), np.load(tiny_run / "labels.npy")


def test_export_writes_model_labels_and_contract(tiny_run):
    folder = tiny_run / "tflite"
    assert (folder / "labels.txt").read_text().split() == CLASSES
    for variant in ("float32", "int8"):
        model = folder / f"{variant}.tflite"
        contract = json.loads(contract_path(model).read_text())
        assert contract["classes"] == CLASSES
        assert contract["model_file"] == model.name
        assert contract["size_bytes"] == model.stat().st_size
        assert contract["input"]["shape"] == [1, *IMAGE_SIZE, 3]
        assert (contract["input"]["height"], contract["input"]["width"]) == IMAGE_SIZE
        assert contract["input"]["color_order"] == "RGB"
        assert "not a diagnosis" in contract["disclaimer"]
    float_contract = json.loads((folder / "float32.json").read_text())
    assert float_contract["input"]["dtype"] == "float32"
    assert float_contract["input"]["quantization"] is None
    assert float_contract["output"]["quantization"] is None


def test_int8_contract_takes_raw_uint8_bytes(tiny_run):
    """The full-integer model's input is uint8 0-255 with scale 1 and zero point 0."""
    contract = json.loads((tiny_run / "tflite" / "int8.json").read_text())
    assert contract["input"]["dtype"] == "uint8"
    assert contract["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert contract["output"]["dtype"] == "uint8"
    assert contract["output"]["quantization"]["scale"] == pytest.approx(1 / 256)


def test_int8_is_much_smaller_than_float32(tiny_run):
    f32 = (tiny_run / "tflite" / "float32.tflite").stat().st_size
    i8 = (tiny_run / "tflite" / "int8.tflite").stat().st_size
    assert i8 < 0.5 * f32  # weights are 4x smaller; per-channel parameters and biases are not


def test_float32_tflite_computes_what_keras_computes(tiny_run, tiny_keras, tiny_data):
    x, _ = tiny_data
    keras_probs = tiny_keras.predict(x, verbose=0)
    tflite_probs = export.run_tflite(tiny_run / "tflite" / "float32.tflite", x)
    np.testing.assert_allclose(tflite_probs, keras_probs, atol=1e-4)
    np.testing.assert_allclose(tflite_probs.sum(1), 1.0, atol=1e-4)


def test_int8_tflite_stays_close_to_keras(tiny_run, tiny_keras, tiny_data):
    x, _ = tiny_data
    keras_probs = tiny_keras.predict(x, verbose=0)
    int8_probs = export.run_tflite(tiny_run / "tflite" / "int8.tflite", x)
    error = np.abs(int8_probs - keras_probs).mean()
    agreement = (int8_probs.argmax(1) == keras_probs.argmax(1)).mean()
    assert error < 0.05 and agreement >= 0.75, (error, agreement)


def test_layer_errors_follow_the_network_and_grow_past_rounding(tiny_keras, tiny_data):
    x, _ = tiny_data
    errors = export.layer_errors(tiny_keras, x[::2], debug_images=4)
    convs = errors[errors["op"].isin(["CONV_2D", "DEPTHWISE_CONV_2D"])]
    assert len(convs) == 27  # MobileNet: 1 + 13 depthwise + 13 pointwise convolutions
    assert convs["layer"].iloc[0].startswith("conv1") and errors["op"].iloc[-1] == "SOFTMAX"
    # The rescaling at the input only rounds (0.29 steps in theory); deeper layers inherit
    # the errors of the layers before them, so some are well above pure rounding.
    assert 0.15 < errors["error_in_steps"].iloc[0] < 0.5, errors.head()
    assert convs["error_in_steps"].max() > 0.6, convs


def test_compare_table_has_every_model_and_perfect_float32_agreement(tiny_run, tiny_keras,
                                                                    tiny_data):
    x, y = tiny_data
    exported = {v: export.Exported(v, tiny_run / "tflite" / f"{v}.tflite",
                                   tiny_run / "tflite" / f"{v}.json",
                                   tiny_run / "tflite" / "labels.txt")
                for v in ("float32", "int8")}
    table = export.compare(tiny_keras, exported, x[:12], y[:12],
                           keras_path=tiny_run / "model.keras", latency_images=2, repeats=1)
    assert list(table.index) == ["keras (float32)", "tflite float32", "tflite int8"]
    assert table.loc["tflite float32", "agreement"] == 1.0
    assert table.loc["tflite float32", "d_balanced_accuracy"] == pytest.approx(0.0)
    assert (table["latency_ms"] > 0).all()
    verdicts = export.check_targets(table)["met"]
    f32, i8 = table.loc["tflite float32"], table.loc["tflite int8"]
    assert verdicts["int8 size / float32 size"] == (i8["size_mb"] / f32["size_mb"] <= 1 / 3)
    assert verdicts["latency speed-up (float32 / int8)"] == (f32["latency_ms"] > i8["latency_ms"])


def test_quiet_converter_hides_the_converters_notices_and_nothing_else(tiny_keras, tiny_data):
    """Chapter 07 converts in front of the learner: inside ``export.quiet_converter`` absl's
    trackable_obj notice and the int8 statistics warning do not reach the output; outside it
    they do (so the test can fail)."""
    import logging
    import warnings

    x, _ = tiny_data
    frozen = export.frozen_function(tiny_keras)

    def convert_int8() -> tuple[list[str], bytes]:
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())
        logging.getLogger("absl").addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                content = export._int8_converter(frozen, x[:4]).convert()
        finally:
            logging.getLogger("absl").removeHandler(handler)
        return seen + [str(w.message) for w in caught], content

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every warning shown, however often it came before
        with export.quiet_fds():  # the C++ log only: the Python notices still come through
            loud, _ = convert_int8()
        with export.quiet_converter():
            quiet, content = convert_int8()
    assert any("trackable_obj" in m for m in loud), loud
    assert any("Statistics for quantized inputs" in m for m in loud), loud
    assert not [m for m in quiet if "trackable_obj" in m or "Statistics for quantized" in m], quiet
    assert content[4:8] == b"TFL3"  # a real TFLite flatbuffer came out


def test_check_targets_fails_each_target_it_should():
    def table(size, accuracy, latency):
        return pd.DataFrame({"size_mb": [4.0, size], "balanced_accuracy": [0.70, accuracy],
                             "latency_ms": [2.0, latency]},
                            index=["tflite float32", "tflite int8"])

    assert export.check_targets(table(1.0, 0.705, 1.0))["met"].all()
    failed = export.check_targets(table(2.0, 0.68, 3.0))["met"]
    assert not failed.any(), failed  # too big, 2 points lost, slower: all three fail
    assert list(export.check_targets(table(1.0, 0.689, 1.0))["met"]) == [True, False, True]


def test_convert_rejects_unknown_variant_and_int8_without_calibration(tiny_keras):
    model = tiny_keras
    with pytest.raises(ValueError, match="unknown variant"):
        export.convert(model, "int4")
    with pytest.raises(ValueError, match="calibration"):
        export.convert(model, "int8")


def test_calibration_images_come_from_the_training_split(ham_sample):
    table = ham_sample.assign(split=["train" if i % 2 else "test" for i in range(len(ham_sample))])
    calib = export.calibration_images(table, CLASSES, IMAGE_SIZE, 5)
    assert calib.shape == (5, *IMAGE_SIZE, 3) and calib.dtype == np.float32
    pixels = {p: export.pipeline_images(table[table["split"] == p], CLASSES, IMAGE_SIZE)[0]
              for p in ("train", "test")}

    def found_in(image, stack):
        return bool((np.abs(stack - image).reshape(len(stack), -1).max(axis=1) < 1e-3).any())

    assert all(found_in(image, pixels["train"]) for image in calib)
    assert not any(found_in(image, pixels["test"]) for image in calib)
    with pytest.raises(ValueError, match="no training rows"):
        export.calibration_images(table.assign(split="test"), CLASSES, IMAGE_SIZE, 5)


def test_chapter_07_in_an_empty_runs_folder_names_chapters_02_and_03(tmp_path, monkeypatch):
    """Run before chapters 02 and 03, chapter 07 stops at once: its message lists the split
    (chapter 02) and the run folder (chapter 03) it lacks, and gives the command for the earliest."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("SKINBOOK_RUNS", str(tmp_path / "runs"))  # no run folders there
    with pytest.raises(PapermillExecutionError) as caught:
        papermill.execute_notebook(str(REPO / "chapters" / "07_export_and_app.ipynb"),
                                   str(tmp_path / "out.ipynb"), parameters={"profile": "smoke"},
                                   kernel_name="python3", progress_bar=False,
                                   cwd=str(REPO / "chapters"))
    assert caught.value.ename == "ChapterOrderError"
    message = caught.value.evalue
    assert "the ham10000 split" in message and "made by chapter 02_preprocessing" in message
    assert "03_transfer_learning" in message
    assert "Run chapter 02_preprocessing first" in message and "--chapters 02" in message
