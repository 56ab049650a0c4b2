"""Decoding one photo for prediction: the one function the prediction command and the web app share.

:func:`decode` turns a file or the bytes of an upload into an ``(H, W, 3)`` uint8 RGB array,
small enough to work with and oriented and coloured as the person who took it saw it. Resizing
to the model's input size is *not* done here: :func:`helpers.predict.resize` does that, the same
way for every caller.

What is accepted and refused, with the HTTP status the web app answers (the command line prints
the same message):

=====================================  ======  ==================================================
empty file                             400     "... is empty"
not an image (text, PDF...)            415     "... is not an image"
an image in another format (GIF...)    415     "... is a GIF image"
more pixels than ``max_pixels``        413     checked from the header, before any decoding
smaller than 32 px on a side           422     too small to say anything about
corrupt or truncated image             422     the decoder's complaint
=====================================  ======  ==================================================

JPEG includes MPO, the JPEG with extra pictures that phones and cameras write (the first
picture is the photo). On the way, a large JPEG is decoded at 1/2, 1/4 or 1/8 scale directly
from its DCT coefficients (``draft``), so a 12-megapixel phone photo never exists at full size
in memory; then the EXIF orientation is applied, transparency is composited on white, 16-bit
values are scaled to 8 bits and an embedded colour profile is converted to sRGB. At most
:data:`DECODE_SLOTS` decodes run at once, so concurrent uploads cannot multiply the peak memory.
Images at most :data:`MAX_SIDE` pixels on their longest side, without orientation tag or colour
profile (the training images: HAM10000 and melanoma10k carry neither), decode to exactly the
pixels :func:`helpers.images.read_image` gives.
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from helpers.images import MIN_SIDE, ImageError

MAX_PIXELS = 13_000_000
"""Largest image accepted, in pixels: a 12-megapixel phone photo (4032x3024) with a little room.
The models need about 0.03 megapixels; the limit only keeps memory bounded."""
MAX_SIDE = 1024
"""Longest side of the decoded array: larger images are downscaled (the models need far less)."""
DECODE_SLOTS = 2
"""How many images are decoded at the same time (the book's reference CPU has 2 cores)."""

FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
"""Accepted Pillow formats and the name they are reported under (an MPO *is* a JPEG photo)."""
ACCEPTED = "a JPEG, PNG or WebP photo"

PROBLEMS = {
    # kind: (HTTP status, message); {name} is the file name, the rest is filled in by _refuse.
    "missing": (404, "{name}: file not found."),
    "unreadable": (400, "{name}: cannot be read ({detail})."),
    "empty": (400, "{name} is empty: choose " + ACCEPTED + "."),
    "not_image": (415, "{name} is not an image: choose " + ACCEPTED + "."),
    "format": (415, "{name} is a {format} image: choose " + ACCEPTED
                    + " (save it as JPEG first)."),
    "too_many_pixels": (413, "{name} has {megapixels} megapixels, more than the {limit:g} "
                             "accepted: resize it first (a 12-megapixel phone photo fits)."),
    "too_small": (422, "{name} is only {width}x{height} pixels: too small to classify; at "
                       "least {min_side}x{min_side} is needed."),
    "corrupt": (422, "{name}: corrupt or truncated image ({detail}); send the original photo "
                     "again."),
}
"""Every refusal, in one place: the command line and the web app print these same strings."""

_slots = threading.BoundedSemaphore(DECODE_SLOTS)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
"""EXIF orientation tag -> the transposition that shows the photo upright (as exif_transpose)."""


class DecodeError(ImageError):
    """An image that cannot be used: ``kind`` (a key of PROBLEMS), its HTTP status, a message."""

    def __init__(self, kind: str, **values):
        status, template = PROBLEMS[kind]
        super().__init__(template.format(**values))
        self.kind = kind
        self.status = status
        self.message = str(self)


@dataclass
class Decoded:
    """A decoded photo: RGB pixels (at most MAX_SIDE on a side) and what it was."""

    rgb: np.ndarray
    """``(H, W, 3)`` uint8 RGB, oriented, sRGB, downscaled to at most ``max_side``."""
    format: str
    """"JPEG", "PNG" or "WebP" (an MPO is reported as JPEG)."""
    width: int
    height: int
    """Size of the photo as uploaded, after orientation (before any downscaling)."""
    mode: str
    """Pillow's mode of the stored pixels (L = grayscale, RGBA = with transparency...)."""
    grayscale: bool
    """True when the photo has no colour (a gray mode, or three equal channels)."""
    rotated: bool
    """True when an EXIF orientation tag turned the photo."""
    colour_profile: str | None
    """None, "sRGB" (left as is), "converted to sRGB" or "ignored (unreadable)"."""

    def info(self) -> dict:
        """The JSON-ready description (everything but the pixels)."""
        return {"width": self.width, "height": self.height, "format": self.format,
                "mode": self.mode, "rotated": self.rotated, "colour_profile": self.colour_profile}


def decode(source: str | Path | bytes, name: str | None = None, *,
           max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> Decoded:
    """Decode a file (path) or an upload (bytes); :class:`DecodeError` says what is wrong.

    ``name`` labels the image in messages (default: the path, or "upload").
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "upload")
    if isinstance(source, bytes):
        handle = io.BytesIO(source)
    else:
        try:
            handle = open(source, "rb")
        except FileNotFoundError:
            raise DecodeError("missing", name=name) from None
        except OSError as err:  # a folder, no permission...
            raise DecodeError("unreadable", name=name, detail=err.strerror or err) from None
    with handle:
        if handle.seek(0, os.SEEK_END) == 0:
            raise DecodeError("empty", name=name)
        handle.seek(0)
        with _open(handle, name, max_pixels) as image:
            _check(image, name, max_pixels)
            try:
                with _slots:
                    return _decode(image, max_side)
            except (OSError, SyntaxError, ValueError, EOFError) as err:
                raise DecodeError("corrupt", name=name, detail=err) from None


def _open(handle: io.IOBase, name: str, max_pixels: int) -> Image.Image:
    """Read the header only (no pixels yet)."""
    try:
        return Image.open(handle)
    except UnidentifiedImageError:
        raise DecodeError("not_image", name=name) from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise DecodeError("too_many_pixels", name=name, limit=max_pixels / 1e6,
                          megapixels=f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DecodeError("corrupt", name=name, detail=err) from None


def _check(image: Image.Image, name: str, max_pixels: int) -> None:
    """Format and size, from the header."""
    if image.format not in FORMATS:
        raise DecodeError("format", name=name, format=image.format)
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError("too_many_pixels", name=name, megapixels=f"{width * height / 1e6:.3g}",
                          limit=max_pixels / 1e6)
    if min(width, height) < MIN_SIDE:
        raise DecodeError("too_small", name=name, width=width, height=height, min_side=MIN_SIDE)


def _decode(image: Image.Image, max_side: int) -> Decoded:
    """Pixels: draft-decode, downscale, orient, flatten to 8-bit RGB, convert to sRGB."""
    mode, fmt, icc = image.mode, FORMATS[image.format], image.info.get("icc_profile")
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    turned = orientation in (5, 6, 7, 8)
    width, height = image.size[::-1] if turned else image.size
    if fmt == "JPEG" and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    image.load()
    image = _eight_bit(image)
    image.thumbnail((max_side, max_side))
    if orientation in _ORIENT:
        image = image.transpose(_ORIENT[orientation])
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"),
                                      image.convert("RGBA"))
    image, profile = _to_srgb(image, icc)
    rgb = np.asarray(image.convert("RGB"))
    return Decoded(rgb=rgb, format=fmt, width=width, height=height, mode=mode,
                   grayscale=_is_gray(mode, rgb), rotated=orientation in _ORIENT,
                   colour_profile=profile)


def _eight_bit(image: Image.Image) -> Image.Image:
    """Palette, 1-bit and 16/32-bit images in a mode that filters and compositing handle."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I"):  # 16-bit grayscale: 0-65535 to 0-255, rounded, in strips
        values = np.asarray(image)
        gray = np.empty(values.shape, np.uint8)
        for top in range(0, len(values), 256):
            strip = values[top:top + 256].astype(np.int64)
            gray[top:top + 256] = ((strip * 255 + 32767) // 65535).clip(0, 255)
        return Image.fromarray(gray)
    return image


def _to_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, str | None]:
    """Apply an embedded ICC profile (Display P3, Adobe RGB...) to reach sRGB."""
    if not icc:
        return image, None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "sRGB" in ImageCms.getProfileDescription(profile):
            return image, "sRGB"  # converting would only add rounding
        srgb = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB"), \
            "converted to sRGB"
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image, "ignored (unreadable)"


def _is_gray(mode: str, rgb: np.ndarray) -> bool:
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    channels = rgb.astype(np.int16)
    return bool(np.abs(channels[..., 0] - channels[..., 1]).max() <= 2
                and np.abs(channels[..., 1] - channels[..., 2]).max() <= 2)
