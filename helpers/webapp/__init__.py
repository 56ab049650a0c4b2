"""A small Flask web app around one saved model (educational, not a diagnosis).

    python -m helpers.webapp --model book/runs/smoke/models/<run>/model.keras
    python -m helpers.webapp --model book/runs/smoke/models/<run>/tflite/int8.tflite

``GET /`` is the page: upload (or drop) a JPEG or PNG, see the image, the top classes as bars,
the Grad-CAM overlay (Keras models only) and the disclaimer. ``POST /api/predict`` returns the
same result as JSON for scripts (multipart field ``image``, or the raw image as the request
body); ``?gradcam=1`` adds the overlay as a base64 PNG. ``GET /api/health`` says which model is
loaded.

Decisions on bad input (the page shows the message, the API returns ``{"error": ...}`` with
the status):

=============================  ======  ================================================
no file / empty file           400     "No image received"
not an image (text, PDF...)    415     JPEG or PNG expected
an image in another format     415     e.g. a GIF: JPEG or PNG expected
corrupt or truncated image     422     the decoder's complaint
larger than the upload limit   413     the limit in MB (checked before reading the body)
more pixels than 40 MP         413     decompression-bomb guard
smaller than 32 px on a side   422     too small to say anything about
grayscale                      200     accepted, with a note: it is converted to RGB, but
                                       the models learned from colour dermoscopy and colour
                                       carries much of the signal, so treat it with extra doubt
=============================  ======  ================================================

Nothing uploaded touches the disk: uploads are read into memory (the request class below
replaces Werkzeug's temporary-file spooling) and dropped after the response. Only the saved
model and its manifest/contract are needed, never the training code.
"""

from __future__ import annotations

import base64
import io
import threading
import warnings
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, render_template, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import RequestEntityTooLarge

from helpers import DISCLAIMER
from helpers.datasets import HAM_CLASS_NAMES
from helpers.images import MIN_SIDE, ImageError, read_image
from helpers.predict import Predictor, load

MAX_UPLOAD_MB = 10
"""Largest upload accepted (413 above it)."""
MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels (a decompression-bomb guard: 413 above it)."""
ALLOWED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG"}
DISPLAY_SIDE = 480
"""Longest side of the image shown back on the page."""
TOP_K = 5

CLASS_NAMES = {**HAM_CLASS_NAMES, "benign": "Benign", "malignant": "Malignant"}
GRAYSCALE_NOTE = ("This is a grayscale image. It was converted to RGB and classified, but the "
                  "models learned from colour dermoscopy photos and colour carries much of the "
                  "signal: treat this result with extra doubt.")


class UploadError(Exception):
    """A rejected upload: an HTTP status and a message for the person who sent it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class InMemoryRequest(Request):
    """Keep uploaded files in memory: Werkzeug would spool big ones to a temporary file."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


# --- checking and analysing one upload --------------------------------------------------------

def decode_upload(data: bytes, filename: str = "upload") -> tuple[np.ndarray, list[str], dict]:
    """Check an upload and decode it: ``(RGB uint8 array, notes, image info)`` or UploadError."""
    if not data:
        raise UploadError(400, "No image received: choose a JPEG or PNG file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{filename}: the image has too many pixels (limit "
                               f"{MAX_PIXELS // 1_000_000} megapixels).") from None
    except UnidentifiedImageError:
        raise UploadError(415, f"{filename} is not an image: upload a JPEG or PNG file.") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise UploadError(422, f"{filename}: the image could not be read ({err}).") from None
    if image.format not in ALLOWED_FORMATS:
        raise UploadError(415, f"{filename} is a {image.format} image: upload a JPEG or PNG file.")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UploadError(413, f"{filename} is {width}x{height} pixels, more than the "
                               f"{MAX_PIXELS // 1_000_000} megapixels accepted: resize it first.")
    if min(width, height) < MIN_SIDE:
        raise UploadError(422, f"{filename} is only {width}x{height} pixels: too small to "
                               f"classify; at least {MIN_SIDE}x{MIN_SIDE} is needed.")
    mode = image.mode
    try:
        rgb = read_image(image, name=filename)
    except ImageError as err:
        raise UploadError(422, f"{err} Upload an intact JPEG or PNG.") from None
    notes = []
    channels = rgb.astype(np.int16)
    if mode in ("1", "L", "LA", "I", "I;16", "F") or (
            np.abs(channels[..., 0] - channels[..., 1]).max() <= 2
            and np.abs(channels[..., 1] - channels[..., 2]).max() <= 2):
        notes.append(GRAYSCALE_NOTE)
    info = {"width": width, "height": height, "format": image.format, "mode": mode}
    return rgb, notes, info


def image_data_url(rgb: np.ndarray, max_side: int = DISPLAY_SIDE) -> str:
    """A small JPEG of the image as a ``data:`` URL (the page never links to a stored file)."""
    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def overlay_png(rgb: np.ndarray, cam: np.ndarray, max_side: int = DISPLAY_SIDE,
                alpha: float = 0.45) -> str:
    """The image with a Grad-CAM map (jet colours: blue low, red high) as a base64 PNG."""
    from matplotlib import colormaps

    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side))
    cam_img = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize(
        image.size, Image.BILINEAR)
    heat = (colormaps["jet"](np.asarray(cam_img) / 255.0)[..., :3] * 255).astype(np.float32)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * heat
    buffer = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class GradCam:
    """Grad-CAM for the loaded model through :mod:`helpers.explain`, when that is possible."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._features = None
        self._lock = threading.Lock()
        self.reason = None
        if predictor.kind != "keras":
            self.reason = ("Grad-CAM needs the Keras model's gradients; this server runs a "
                           "TFLite model. Start it with the run's model.keras to see the map.")
            return
        try:
            from helpers import explain
        except Exception as err:  # explain is optional: the app works without it
            self.reason = f"Grad-CAM is not available ({type(err).__name__}: {err})."
            return
        self._explain = explain

    @property
    def available(self) -> bool:
        return self.reason is None

    def __call__(self, rgb: np.ndarray, class_index: int) -> np.ndarray | None:
        """The Grad-CAM map (model resolution, 0-1) for one image and class, or None."""
        if not self.available:
            return None
        from helpers.predict import resize

        x = resize(rgb, self.predictor.image_size)[None]
        try:
            with self._lock:
                if self._features is None:
                    self._features = self._explain.feature_model(self.predictor._model)
                cam = self._explain.gradcam(self.predictor._model, x, [class_index],
                                            features=self._features)
        except Exception as err:  # a model the explainer cannot handle: say so, keep serving
            self.reason = f"Grad-CAM failed for this model ({type(err).__name__}: {err})."
            return None
        return cam[0]


def analyse(predictor: Predictor, gradcam: GradCam, data: bytes, filename: str, *,
            with_gradcam: bool = True) -> tuple[dict, np.ndarray]:
    """The result for one upload (the JSON the API returns) and the decoded RGB image."""
    rgb, notes, info = decode_upload(data, filename)
    result = predictor.predict_rgb(rgb)
    probs = result["probabilities"]
    ranked = sorted(probs.items(), key=lambda kv: kv[1], reverse=True)
    result.update({
        "predicted_name": CLASS_NAMES.get(result["predicted_class"], result["predicted_class"]),
        "top": [{"class": c, "name": CLASS_NAMES.get(c, c), "probability": p}
                for c, p in ranked[:TOP_K]],
        "notes": notes,
        "image": {"filename": filename, **info},
        "model": model_info(predictor),
        "gradcam": {"available": gradcam.available},
        "disclaimer": DISCLAIMER,
    })
    if with_gradcam and gradcam.available:
        index = predictor.classes.index(result["predicted_class"])
        cam = gradcam(rgb, index)
        if cam is not None:
            result["gradcam"]["png_base64"] = overlay_png(rgb, cam)
            result["gradcam"]["class"] = result["predicted_class"]
    if not gradcam.available:
        result["gradcam"]["reason"] = gradcam.reason
    return result, rgb


def model_info(predictor: Predictor) -> dict:
    info = predictor.info
    return {"file": predictor.path.name, "kind": predictor.kind,
            "variant": info.get("variant") if predictor.kind == "tflite" else "keras",
            "task": info.get("task"), "backbone": info.get("backbone"),
            "classes": predictor.classes, "image_size": list(predictor.image_size)}


# --- the app ----------------------------------------------------------------------------------

def create_app(model: str | Path | Predictor, *, max_upload_mb: float = MAX_UPLOAD_MB) -> Flask:
    """The Flask app serving ``model`` (a path to ``.keras``/``.tflite``, or a loaded Predictor)."""
    predictor = model if isinstance(model, Predictor) else load(model)
    gradcam = GradCam(predictor)
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.config["PREDICTOR"] = predictor
    limit_text = f"{max_upload_mb:g} MB"

    def page(status: int = 200, **context):
        return render_template("index.html", disclaimer=DISCLAIMER, model=model_info(predictor),
                               limit=limit_text, gradcam_reason=gradcam.reason,
                               min_side=MIN_SIDE, **context), status

    def upload_from_request() -> tuple[bytes, str]:
        if request.files:
            upload = request.files.get("image") or next(iter(request.files.values()))
            return upload.read(), upload.filename or "upload"
        if request.mimetype.startswith("image/") or request.mimetype == "application/octet-stream":
            return request.get_data(), "upload"
        return b"", "upload"

    @app.get("/")
    def index():
        return page()

    @app.post("/")
    def upload_page():
        try:
            data, filename = upload_from_request()
            result, rgb = analyse(predictor, gradcam, data, filename)
        except UploadError as err:
            return page(err.status, error=err.message)
        return page(result=result, image_url=image_data_url(rgb))

    @app.post("/api/predict")
    def api_predict():
        try:
            data, filename = upload_from_request()
            result, _ = analyse(predictor, gradcam, data, filename,
                                with_gradcam=request.args.get("gradcam") in ("1", "true", "yes"))
        except UploadError as err:
            return jsonify(error=err.message, status=err.status), err.status
        return jsonify(result)

    @app.get("/api/health")
    def health():
        return jsonify(status="ok", model=model_info(predictor),
                       gradcam=gradcam.available, disclaimer=DISCLAIMER)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_err):
        message = f"The upload is larger than the {limit_text} limit: send a smaller image."
        if request.path.startswith("/api/"):
            return jsonify(error=message, status=413), 413
        return page(413, error=message)

    @app.errorhandler(404)
    def not_found(_err):
        if request.path.startswith("/api/"):
            return jsonify(error=f"no such endpoint: {request.path}", status=404), 404
        return page(404, error=f"There is no page at {request.path}.")

    @app.errorhandler(405)
    def wrong_method(_err):
        return jsonify(error=f"{request.method} is not allowed on {request.path}",
                       status=405), 405

    @app.errorhandler(500)
    def server_error(_err):
        message = "Something went wrong while analysing the image; the server is still running."
        if request.path.startswith("/api/"):
            return jsonify(error=message, status=500), 500
        return page(500, error=message)

    return app
