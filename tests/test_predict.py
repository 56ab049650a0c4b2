"""``python -m helpers.predict``: Keras and TFLite agree on real images; bad files fail alone.

Uses the tiny real run of ``test_export`` (MobileNet 0.25 with ImageNet weights and a head
trained on real HAM10000 images), exported to float32 and int8 TFLite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import images, predict
from test_export import IMAGE_SIZE, tiny_keras, tiny_run  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_images(ham_sample, tmp_path_factory) -> list[Path]:
    """Real lesion photos as the CLI meets them: JPEG, a big PNG, grayscale, RGBA, odd sizes."""
    folder = tmp_path_factory.mktemp("predict_images")
    paths = [Path(p) for p in ham_sample["path"].iloc[:4]]
    source = Image.open(paths[0])
    big = folder / "big.png"
    source.resize((611, 457)).save(big)
    gray = folder / "gray.jpg"
    source.convert("L").save(gray)
    rgba = folder / "rgba.png"
    with_alpha = Image.open(paths[1]).convert("RGBA")
    with_alpha.putalpha(200)
    with_alpha.save(rgba)
    narrow = folder / "narrow.jpg"
    Image.open(paths[2]).crop((0, 0, 60, 150)).save(narrow)
    return [*paths, big, gray, rgba, narrow]


@pytest.fixture(scope="module")
def keras_predictor(tiny_run):
    return predict.load(tiny_run / "model.keras")


def test_loads_classes_and_size_from_manifest_and_contract(tiny_run, keras_predictor):
    tflite = predict.load(tiny_run / "tflite" / "int8.tflite")
    for loaded in (keras_predictor, tflite):
        assert loaded.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        assert loaded.image_size == IMAGE_SIZE
    assert (keras_predictor.kind, tflite.kind) == ("keras", "tflite")


def test_tflite_float32_and_keras_agree_on_real_images(tiny_run, keras_predictor, real_images):
    tflite = predict.load(tiny_run / "tflite" / "float32.tflite")
    for path in real_images:
        a, b = keras_predictor.predict_file(path), tflite.predict_file(path)
        assert a["predicted_class"] == b["predicted_class"], path
        np.testing.assert_allclose(list(a["probabilities"].values()),
                                   list(b["probabilities"].values()), atol=1e-4)
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_tflite_int8_mostly_agrees_with_keras_on_real_images(tiny_run, keras_predictor,
                                                             real_images):
    tflite = predict.load(tiny_run / "tflite" / "int8.tflite")
    same = [keras_predictor.predict_file(p)["predicted_class"]
            == tflite.predict_file(p)["predicted_class"] for p in real_images]
    assert np.mean(same) >= 0.75, same


def test_predictor_resizes_like_the_training_pipeline(tiny_run, tiny_keras, real_images):
    """The CLI feeds the model what the training pipeline (tf.data, chapter 03) would make of
    the same file: decoded and resized by the book's one resize, not by a second copy of it."""
    import tensorflow as tf

    loaded = predict.load(tiny_run / "tflite" / "float32.tflite")
    for path in real_images[:3]:
        pipeline = images.decode_and_resize(tf.constant(str(path)), IMAGE_SIZE).numpy()
        direct = tiny_keras.predict(pipeline[None], verbose=0)[0]
        via_cli = loaded.predict_file(path)["probabilities"]
        np.testing.assert_allclose(list(via_cli.values()), direct, atol=2e-3)
    # and that resize is not plain bilinear: shrinking 3x averages, bilinear samples
    rgb = np.asarray(Image.open(real_images[0]).convert("RGB"))
    plain = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 3, rgb.shape[0] // 3),
                                                   Image.NEAREST), np.float32)
    ours = predict.resize(rgb, (rgb.shape[0] // 3, rgb.shape[1] // 3))
    assert np.abs(ours - plain).mean() > 1.0


def test_cli_prints_json_per_image_and_fails_only_the_bad_files(tiny_run, real_images,
                                                                tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(real_images[0]).read_bytes()[:1500])
    missing = tmp_path / "missing.jpg"
    files = [real_images[0], text, truncated, missing, real_images[5]]
    status = predict.main(["--model", str(tiny_run / "tflite" / "int8.tflite"),
                           *map(str, files)])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert status == 1
    assert [line["file"] for line in lines] == [str(f) for f in files]
    assert "not an image" in lines[1]["error"]
    assert "corrupt or truncated" in lines[2]["error"]
    assert "not found" in lines[3]["error"]
    for good in (lines[0], lines[4]):
        assert good["predicted_class"] in good["probabilities"]
        assert sum(good["probabilities"].values()) == pytest.approx(1.0, abs=0.05)
    assert "3 of 5" in err and "not a diagnosis" in err


def test_cli_exits_zero_when_all_images_are_read(tiny_run, real_images, capsys):
    assert predict.main(["--model", str(tiny_run / "model.keras"), str(real_images[0])]) == 0
    assert json.loads(capsys.readouterr().out)["predicted_class"]


def test_model_without_contract_or_manifest_is_a_clear_error(tiny_run, tmp_path, capsys):
    lonely = tmp_path / "model.tflite"
    lonely.write_bytes((tiny_run / "tflite" / "int8.tflite").read_bytes())
    with pytest.raises(predict.ModelError, match="contract"):
        predict.load(lonely)
    assert predict.main(["--model", str(tmp_path / "nope.keras"), "x.jpg"]) == 2
    assert "not found" in capsys.readouterr().err


def test_tflite_prediction_runs_without_tensorflow(tiny_run, real_images):
    """A .tflite model needs LiteRT only: the command never imports TensorFlow or Keras."""
    code = ("import sys; from helpers import predict; "
            f"status = predict.main(['--model', {str(tiny_run / 'tflite' / 'int8.tflite')!r}, "
            f"{str(real_images[0])!r}]); "
            "print('TF', any(m in sys.modules for m in ('tensorflow', 'keras'))); "
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "TF False" in done.stdout
    assert json.loads(done.stdout.splitlines()[0])["predicted_class"]
