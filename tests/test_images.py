"""helpers.images on real images and on broken files made from real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import datasets, images
from helpers.images import ImageError


@pytest.fixture(scope="module")
def real_path(ham_sample) -> Path:
    return Path(ham_sample["path"].iloc[0])


@pytest.fixture
def broken(tmp_path: Path, real_path: Path) -> dict[str, Path]:
    """Files that must be rejected, each made from real image bytes."""
    data = real_path.read_bytes()
    files = {
        "truncated": tmp_path / "truncated.jpg",
        "text": tmp_path / "notes.jpg",
        "tiny": tmp_path / "tiny.jpg",
        "empty": tmp_path / "empty.jpg",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("lesion notes, not a picture\n")
    Image.open(real_path).resize((20, 15)).save(files["tiny"])
    files["empty"].write_bytes(b"")
    return files


def test_read_image_on_real_images(ham_sample):
    for path in ham_sample["path"].iloc[:10]:
        array = images.read_image(path)
        assert array.shape == (150, 200, 3) and array.dtype == np.uint8
        assert np.array_equal(array, np.asarray(Image.open(path).convert("RGB")))
    assert np.array_equal(images.read_image(Path(path).read_bytes()), array)  # bytes too


def test_grayscale_png_becomes_three_equal_channels(tmp_path, real_path):
    gray = Image.open(real_path).convert("L")
    gray.save(tmp_path / "gray.png")
    array = images.read_image(tmp_path / "gray.png")
    assert array.shape == (150, 200, 3)
    for channel in range(3):
        assert np.array_equal(array[..., channel], np.asarray(gray))


def test_rgba_png_is_composited_on_white(tmp_path, real_path):
    rgb = np.asarray(Image.open(real_path).convert("RGB"))
    alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    alpha[:, :100] = 0  # left half fully transparent
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    array = images.read_image(tmp_path / "rgba.png")
    assert array.shape == (150, 200, 3)
    assert (array[:, :100] == 255).all()
    assert np.array_equal(array[:, 100:], rgb[:, 100:])


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path, real_path):
    gray = np.asarray(Image.open(real_path).convert("L"), dtype=np.uint16) * 257  # 0..65535
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    array = images.read_image(tmp_path / "gray16.png")
    assert array.dtype == np.uint8 and array.shape == (150, 200, 3)
    assert np.abs(array[..., 0].astype(int) - gray // 257).max() <= 1


@pytest.mark.parametrize("kind, message", [
    ("truncated", "corrupt or truncated"),
    ("text", "not an image file"),
    ("tiny", "20x15 pixels is too small"),
    ("empty", "not an image file"),
])
def test_broken_files_raise_image_error_naming_the_file(broken, kind, message):
    with pytest.raises(ImageError, match=message) as info:
        images.read_image(broken[kind])
    assert str(broken[kind]) in str(info.value)


def test_missing_file_and_directory_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match=r"gone\.jpg: file not found"):
        images.read_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="cannot be read"):
        images.read_image(tmp_path)


def test_check_images_excludes_and_names_the_bad_ones(ham_sample, broken, capsys):
    bad = pd.DataFrame({"image_id": [f"bad_{k}" for k in broken],
                        "path": [str(p) for p in broken.values()],
                        "label": "nv", "group": [f"g_{k}" for k in broken], "dataset": "test"})
    table = pd.concat([ham_sample, bad], ignore_index=True)
    table.attrs["note"] = "kept"
    usable, problems = images.check_images(table, progress=False)
    assert len(usable) == len(ham_sample)
    assert usable["image_id"].tolist() == ham_sample["image_id"].tolist()
    assert sorted(problems["image_id"]) == sorted(bad["image_id"])
    assert usable.attrs["note"] == "kept"
    out = capsys.readouterr().out
    assert f"Excluded {len(broken)} unreadable image(s)" in out
    for path in broken.values():
        assert str(path) in out


def test_check_images_on_clean_real_images_reports_nothing(ham_sample, capsys):
    usable, problems = images.check_images(ham_sample, progress=False)
    assert len(usable) == len(ham_sample) and problems.empty
    assert capsys.readouterr().out == ""


def test_load_batch_shapes_and_range(ham_sample):
    batch = images.load_batch(ham_sample["path"].iloc[:5].tolist(), (64, 80))
    assert batch.shape == (5, 64, 80, 3) and batch.dtype == np.float32
    assert 0 <= batch.min() and batch.max() <= 255 and batch.std() > 10


def test_make_dataset_yields_images_and_labels_in_table_order(ham_sample):
    classes = datasets.HAM_CLASSES
    ds = images.make_dataset(ham_sample, classes, (150, 200), batch_size=8, training=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert xs[0].shape == (8, 150, 200, 3) and x.dtype == np.float32
    assert x.shape == (len(ham_sample), 150, 200, 3)
    assert 0 <= x.min() and x.max() <= 255
    expected = [classes.index(c) for c in ham_sample["label"].astype(str)]
    assert y.tolist() == expected
    # at the native size the pipeline's pixels are the file's pixels
    native = images.load_batch(ham_sample["path"].iloc[:4].tolist(), (150, 200))
    assert np.abs(x[:4] - native).mean() < 1.0


def test_make_dataset_training_shuffles_and_augments(ham_sample):
    classes = datasets.HAM_CLASSES
    ds = images.make_dataset(ham_sample, classes, (64, 80), batch_size=16, training=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (len(ham_sample), 64, 80, 3) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 255.5
    expected = sorted(classes.index(c) for c in ham_sample["label"].astype(str))
    assert sorted(y.tolist()) == expected  # same labels, shuffled order
    assert y.tolist() != [classes.index(c) for c in ham_sample["label"].astype(str)]


def test_make_dataset_reads_grayscale_rgba_and_16_bit_pngs(tmp_path, real_path):
    rgb = Image.open(real_path).convert("RGB")
    rgb.convert("L").save(tmp_path / "g.png")
    rgb.convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(tmp_path / "w.png")
    table = pd.DataFrame({"path": [str(tmp_path / n) for n in ("g.png", "a.png", "w.png")],
                          "label": ["benign", "malignant", "benign"]})
    x, y = next(iter(images.make_dataset(table, datasets.BINARY_CLASSES, (32, 40), batch_size=3)))
    assert x.shape == (3, 32, 40, 3) and y.numpy().tolist() == [0, 1, 0]
    assert float(x.numpy().max()) <= 255.0 and float(x.numpy()[2].max()) > 100  # 16-bit scaled


def test_make_dataset_rejects_unknown_labels(ham_sample):
    with pytest.raises(ValueError, match="not in classes"):
        images.make_dataset(ham_sample, datasets.BINARY_CLASSES, (32, 32))


def test_class_weights_balance_the_classes(ham_table):
    weights = images.class_weights(["a", "a", "a", "b"], ["a", "b", "c"])
    assert weights == pytest.approx({0: 4 / 9, 1: 4 / 3, 2: 0.0})
    classes = datasets.HAM_CLASSES
    real = images.class_weights(ham_table["label"], classes)
    counts = ham_table["label"].value_counts()
    # every class then carries the same total weight: N / K
    for i, c in enumerate(classes):
        assert counts[c] * real[i] == pytest.approx(len(ham_table) / len(classes))
    assert real[classes.index("df")] > real[classes.index("nv")]


@pytest.mark.parametrize("size", [(96, 96), (224, 224), (64, 300), (450, 600)])
def test_numpy_resize_equals_the_training_pipelines_resize(ham_sample, size):
    """The app's resize (Pillow, no TensorFlow) and the tf.data resize give the same pixels,
    shrinking, stretching and enlarging, on real images and on a large noisy one."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (1000, 1333, 3)).astype(np.uint8)
    for rgb in [images.read_image(path) for path in ham_sample["path"][:3]] + [noisy]:
        expected = images.resize_tensor(rgb, size).numpy()
        got = images.resize_rgb(rgb, size)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=0.02)  # a fiftieth of a grey level


def test_pipeline_decodes_jpegs_to_the_same_pixels_as_pillow(ham_sample):
    import tensorflow as tf

    for path in ham_sample["path"][:5]:
        raw = tf.io.read_file(str(path))
        size = tf.shape(tf.io.decode_jpeg(raw))[:2].numpy()
        decoded = images.decode_and_resize(tf.constant(str(path)), tuple(size)).numpy()
        np.testing.assert_array_equal(decoded, images.read_image(path).astype(np.float32))
