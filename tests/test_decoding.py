"""``helpers.decoding.decode``: real lesion photos as phones, cameras and editors write them, and
every refusal with its status and message, the same from the prediction command.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from helpers import predict
from helpers.decoding import MAX_PIXELS, MAX_SIDE, DecodeError, decode
from helpers.images import read_image
from test_export import tiny_run  # noqa: F401 (fixture)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def icc_profile(red, green, blue, description: str = "Test RGB", gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile with the given colourant XYZs (D50)."""
    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(values) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(s15(v) for v in values)

    text = description.encode() + b"\0"
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(78)),
            (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0)
              + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), \
    (0.1431, 0.0606, 0.7141)


@pytest.fixture(scope="module")
def photo(ham_sample) -> Image.Image:
    """A real HAM10000 lesion photo (200x150 here)."""
    return Image.open(ham_sample["path"].iloc[0]).convert("RGB")


# --- photos as the training pipeline reads them -----------------------------------------------

def test_training_photos_decode_to_the_training_pixels(ham_sample):
    for path in ham_sample["path"].iloc[:8]:
        decoded = decode(path)
        assert decoded.format == "JPEG" and not decoded.rotated and decoded.colour_profile is None
        np.testing.assert_array_equal(decoded.rgb, read_image(path))


@pytest.mark.parametrize("variant", ["L", "LA", "RGBA", "P", "P-transparent", "1", "I;16"])
def test_other_modes_decode_like_read_image(photo, variant):
    """Grayscale, alpha on white, palettes, 1-bit and 16-bit PNGs: read_image's pixels."""
    if variant == "I;16":
        gray = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # 16-bit, low bits set:
        image = Image.fromarray(gray + (np.arange(gray.size, dtype=np.uint16) % 200)
                                .reshape(gray.shape).clip(0, 65535 - gray))  # rounding counts
    elif variant == "P-transparent":
        image = photo.convert("P")
        image.info["transparency"] = 3
    elif variant in ("LA", "RGBA"):
        image = photo.convert(variant)
        image.putalpha(Image.linear_gradient("L").resize(photo.size))
    else:
        image = photo.convert(variant)
    data = encode(image, "PNG", **({"transparency": 3} if variant == "P-transparent" else {}))
    decoded = decode(data, "variant.png")
    np.testing.assert_array_equal(decoded.rgb, read_image(data))
    assert decoded.grayscale == (variant in ("L", "LA", "1", "I;16"))


def test_webp_is_accepted(photo):
    decoded = decode(encode(photo, "WEBP", lossless=True), "lesion.webp")
    assert decoded.format == "WebP"
    np.testing.assert_array_equal(decoded.rgb, np.asarray(photo))


# --- phone and camera photos ------------------------------------------------------------------

def test_a_large_jpeg_is_decoded_small(photo):
    """A 12-megapixel photo comes back at MAX_SIDE, from DCT scaling, close to a full decode."""
    big = photo.resize((4032, 3024), Image.BICUBIC)
    decoded = decode(encode(big, "JPEG", quality=92), "phone.jpg")
    assert (decoded.width, decoded.height) == (4032, 3024)
    assert decoded.rgb.shape == (768, MAX_SIDE, 3)
    reference = np.asarray(big.resize((MAX_SIDE, 768), Image.BICUBIC), dtype=np.float32)
    assert np.abs(decoded.rgb - reference).mean() < 3


def test_mpo_from_a_phone_is_a_jpeg(photo):
    """JPEGs with an MPF segment (a second, smaller picture) are accepted as JPEG."""
    data = encode(photo, "MPO", save_all=True, append_images=[photo.resize((100, 75))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    decoded = decode(data, "phone.jpg")
    assert decoded.format == "JPEG" and decoded.rgb.shape == (150, 200, 3)
    np.testing.assert_array_equal(decoded.rgb, read_image(data))


@pytest.mark.parametrize("orientation, stored_as", [
    (6, Image.Transpose.ROTATE_90),    # camera held upright: pixels stored turned left
    (8, Image.Transpose.ROTATE_270),
    (3, Image.Transpose.ROTATE_180),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_exif_orientation_turns_the_photo_upright(photo, orientation, stored_as):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo.transpose(stored_as), "PNG", exif=exif)
    decoded = decode(data, "upright.png")
    assert decoded.rotated and (decoded.width, decoded.height) == photo.size
    np.testing.assert_array_equal(decoded.rgb, np.asarray(photo))


def test_exif_orientation_of_a_large_jpeg(photo):
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = photo.resize((4000, 3000)).transpose(Image.Transpose.ROTATE_90)  # 3000x4000
    decoded = decode(encode(stored, "JPEG", exif=exif), "portrait.jpg")
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.rgb.shape == (768, 1024, 3)


def test_a_colour_profile_is_converted_to_srgb():
    """A profile whose "red" is sRGB's blue: a red pixel must come out blue."""
    swapped = icc_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, "Swapped primaries")
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    for fmt in ("PNG", "JPEG"):
        decoded = decode(encode(red, fmt, icc_profile=swapped), f"wide.{fmt.lower()}")
        assert decoded.colour_profile == "converted to sRGB"
        np.testing.assert_allclose(decoded.rgb[32, 32], [0, 0, 255], atol=2)


def test_srgb_and_unreadable_profiles_leave_the_pixels_alone(photo):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc, state in ((srgb, "sRGB"), (b"not a profile" * 10, "ignored (unreadable)")):
        decoded = decode(encode(photo, "PNG", icc_profile=icc), "tagged.png")
        assert decoded.colour_profile == state
        np.testing.assert_array_equal(decoded.rgb, np.asarray(photo))


# --- refusals -----------------------------------------------------------------------------------

def bad_inputs(photo: Image.Image, folder: Path) -> dict[str, tuple[Path, int, str]]:
    """Bad files written to ``folder``: name -> (path, status, the message's decisive words)."""
    big_jpeg = encode(Image.new("RGB", (6000, 6000), (180, 120, 100)), "JPEG")
    cases = {
        "empty.jpg": (b"", 400, "is empty: choose a JPEG, PNG or WebP photo."),
        "notes.txt": (b"this is not a photo\n", 415, "is not an image: choose a JPEG, PNG or"),
        "lesion.gif": (encode(photo, "GIF"), 415, "is a GIF image: choose a JPEG, PNG or WebP"),
        "lesion.tiff": (encode(photo, "TIFF"), 415, "is a TIFF image"),
        "lesion.bmp": (encode(photo, "BMP"), 415, "is a BMP image"),
        "truncated.jpg": (encode(photo, "JPEG")[:1500], 422, "corrupt or truncated image"),
        "tiny.png": (encode(photo.resize((20, 15)), "PNG"), 422,
                     "is only 20x15 pixels: too small to classify; at least 32x32"),
        "bomb.png": (encode(Image.new("L", (8000, 4990)), "PNG"), 413,
                     "has 39.9 megapixels, more than the 13 accepted: resize it first"),
        "giant.png": (encode(Image.new("1", (20000, 10000)), "PNG"), 413,  # past Pillow's own
                      "has over 179 megapixels, more than the 13 accepted"),     # bomb limit
        # 3.7 KB claiming 6000x6000: decoded, it would be "truncated" (422); 413 = header only
        "header-bomb.jpg": (big_jpeg[:3700], 413, "has 36 megapixels, more than the 13"),
    }
    files = {}
    for name, (data, status, words) in cases.items():
        (folder / name).write_bytes(data)
        files[name] = (folder / name, status, words)
    return files


@pytest.fixture(scope="module")
def bad_files(photo, tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    return bad_inputs(photo, tmp_path_factory.mktemp("bad_images"))


def test_every_bad_input_is_refused_with_its_status_and_message(bad_files):
    for name, (path, status, words) in bad_files.items():
        with pytest.raises(DecodeError) as refusal:
            decode(path.read_bytes(), name)
        assert refusal.value.status == status, name
        assert refusal.value.message.startswith(name) and words in refusal.value.message, \
            refusal.value.message


def test_the_pixel_limit_is_configurable(photo):
    with pytest.raises(DecodeError) as refusal:
        decode(encode(photo, "JPEG"), "photo.jpg", max_pixels=20_000)
    assert refusal.value.status == 413
    assert "photo.jpg has 0.03 megapixels, more than the 0.02 accepted" in refusal.value.message
    assert decode(encode(photo, "JPEG"), max_pixels=30_000).rgb.shape == (150, 200, 3)
    assert MAX_PIXELS >= 4032 * 3024  # a 12-megapixel phone photo fits


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(DecodeError, match="gone.jpg: file not found"):
        decode(tmp_path / "gone.jpg")
    with pytest.raises(DecodeError, match="cannot be read"):
        decode(tmp_path)


def test_the_command_prints_the_same_messages(tiny_run, bad_files, capsys):
    """``python -m helpers.predict`` decodes with helpers.decoding: the same refusals, verbatim."""
    paths = [path for path, _, _ in bad_files.values()]
    status = predict.main(["--model", str(tiny_run / "tflite" / "int8.tflite"), *map(str, paths)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1 and len(lines) == len(paths)
    for line, path in zip(lines, paths):
        with pytest.raises(DecodeError) as refusal:
            decode(path)
        assert line == {"file": str(path), "error": refusal.value.message}
