"""A small Flask web app around one saved model (educational, not a diagnosis).

    python -m helpers.webapp --model book/runs/smoke/models/<run>/model.keras
    python -m helpers.webapp --model book/runs/smoke/models/<run>/tflite/int8.tflite

``GET /`` is the page: take a photo or choose one (JPEG, PNG or WebP), see it, every class with
its probability (malignant types flagged), the referral advice, the Grad-CAM overlay (Keras
models only) and the disclaimer; a photo that does not look like a dermoscopic image of a skin
lesion gets that message instead of a class (:mod:`helpers.advice`). Every page states the
model's measured balanced accuracy with its interval and links ``GET /model-card``, the model
card beside the model (``model_card.md``, as text). ``POST /api/predict`` returns the same
result as JSON for scripts (multipart field
``image``, or the raw image as the request body with an ``image/*`` type); ``?gradcam=1`` adds
the overlay as a base64 PNG. ``GET /api/health`` runs one real prediction and says which model
is loaded. ``python -m helpers.webapp`` serves the app with waitress (see ``__main__``).

Decisions on bad input (the page shows the message, the API returns ``{"error": ...}`` with
the status; the photo itself is judged by :func:`helpers.decoding.decode`, whose messages the
prediction command prints too):

==========================================  ======  ===========================================
no file / empty file                        400     "No image received" / "... is empty"
a body that is neither multipart nor image  415     how to send the photo
not an image (text, PDF...)                 415     "... is not an image"
an image in another format (GIF, TIFF...)   415     "... is a GIF image"
body larger than the upload limit           413     the limit in MB (Content-Length checked
                                                    before reading; chunked bodies too)
more pixels than the limit (13 MP)          413     from the header, before decoding
smaller than 32 px on a side                422     too small to say anything about
corrupt or truncated image                  422     the decoder's complaint
wrong method                                405     with an ``Allow`` header
unknown Host header                         400     the allowed-hosts setting
form POST from another site's page          403     (browsers send ``Origin``; curl does not)
grayscale                                   200     accepted, with a note: it is converted to
                                                    RGB, but the models learned from colour
                                                    dermoscopy, so treat it with extra doubt
==========================================  ======  ===========================================

Every response carries security headers (a strict Content-Security-Policy, nosniff, no
referrer, no framing) and, except static files, ``Cache-Control: no-store``: the result page
embeds the user's photo. Uploaded file names are echoed as base names of at most 80 characters.
Nothing uploaded touches the disk: uploads are read into memory (the request class below
replaces Werkzeug's temporary-file spooling) and dropped after the response. Only the saved
model and its manifest/contract are needed, never the training code.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, render_template, request, send_file
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from helpers import DISCLAIMER
from helpers.decoding import ACCEPTED, MAX_PIXELS, DecodeError, Decoded, decode
from helpers.images import MIN_SIDE
from helpers.predict import Predictor, load
from helpers.webapp.guards import (LOCAL_HOSTS, SECURITY_HEADERS, RequestLog, clean_filename,
                                   cross_site, host_allowed)
from helpers.webapp.results import GradCam, analyse, image_data_url, model_info

MAX_UPLOAD_MB = 10
"""Largest upload accepted (413 above it)."""
NO_IMAGE = "No image received: take a photo or choose " + ACCEPTED + "."


class UploadError(Exception):
    """A rejected request: an HTTP status and a message for the person who sent it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class InMemoryRequest(Request):
    """Keep uploaded files in memory: Werkzeug would spool big ones to a temporary file."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def read_upload() -> tuple[bytes, str]:
    """The uploaded bytes and their (cleaned) file name, from a form or a raw image body."""
    if request.mimetype == "multipart/form-data":
        # the page has two file inputs (camera, gallery): the one not used arrives empty
        for _field, upload in request.files.items(multi=True):
            if upload.filename:
                return upload.read(), clean_filename(upload.filename)
        raise UploadError(400, NO_IMAGE)
    if request.mimetype.startswith("image/") or request.mimetype == "application/octet-stream":
        return request.get_data(), "upload"
    if not request.mimetype and not request.content_length:
        raise UploadError(400, NO_IMAGE)
    raise UploadError(415, "Send the photo as the form field 'image' (curl -F image=@photo.jpg) "
                           "or as the body with an image/* Content-Type, not as "
                           f"{request.mimetype or 'a body without Content-Type'}.")


def create_app(model: str | Path | Predictor, *, max_upload_mb: float = MAX_UPLOAD_MB,
               max_pixels: int = MAX_PIXELS,
               allowed_hosts: Iterable[str] = LOCAL_HOSTS) -> Flask:
    """The Flask app serving ``model`` (a path to ``.keras``/``.tflite``, or a loaded Predictor).

    ``allowed_hosts`` lists the host names the app answers to (``"*"``: any).
    """
    predictor = model if isinstance(model, Predictor) else load(model)
    gradcam = GradCam(predictor)
    allowed_hosts = tuple(allowed_hosts)
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.config["PREDICTOR"] = predictor
    app.wsgi_app = RequestLog(app.wsgi_app)
    limits = {"upload": f"{max_upload_mb:g} MB", "megapixels": f"{max_pixels / 1e6:g}",
              "min_side": MIN_SIDE}

    def page(status: int = 200, **context):
        return render_template("index.html", disclaimer=DISCLAIMER, model=model_info(predictor),
                               limits=limits, **context), status

    def refuse(status: int, message: str, headers: dict | None = None):
        if request.path.startswith("/api/"):
            response = jsonify(error=message, status=status)
            response.status_code = status
        else:
            response = app.make_response(page(status, error=message))
        response.headers.update(headers or {})
        return response

    def analyse_upload(with_gradcam: bool) -> tuple[dict, Decoded]:
        data, filename = read_upload()
        try:
            photo = decode(data, filename, max_pixels=max_pixels)
        except DecodeError as err:
            raise UploadError(err.status, err.message) from None
        return analyse(predictor, gradcam, photo, filename, with_gradcam=with_gradcam), photo

    @app.before_request
    def check_host_and_origin():
        if not host_allowed(request.host, allowed_hosts):  # JSON: no page echoing the host
            return jsonify(error="This server does not answer to that host name. Its operator "
                                 "can add it with --allowed-hosts.", status=400), 400
        if request.method == "POST" and cross_site(request.headers, request.host):
            return refuse(403, "Uploads are accepted only from this app's own page: open it "
                               "and send the photo from there.")
        return None

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index():
        return page()

    @app.post("/")
    def upload_page():
        try:
            result, photo = analyse_upload(with_gradcam=True)
        except UploadError as err:
            return refuse(err.status, err.message)
        return page(result=result, image_url=image_data_url(photo.rgb))

    @app.post("/api/predict")
    def api_predict():
        try:
            result, _ = analyse_upload(request.args.get("gradcam") in ("1", "true", "yes"))
        except UploadError as err:
            return refuse(err.status, err.message)
        return jsonify(result)

    @app.get("/model-card")
    def model_card():
        advisor = predictor.advisor
        if advisor is None or advisor.card is None:
            return refuse(404, "This model has no model card: run the chapter 'Before a model "
                               "meets a patient' for its run (and export it again).")
        return send_file(advisor.folder / advisor.card, mimetype="text/plain; charset=utf-8",
                         max_age=0)

    @app.get("/api/health")
    def health():
        started = time.perf_counter()
        try:  # one real prediction on a plain gray image: the model loads, runs and answers
            probe = predictor.predict_rgb(np.full((*predictor.image_size, 3), 128, np.uint8))
        except Exception as err:  # whatever broke, the health check must say so, not crash
            return jsonify(status="error", error=f"{type(err).__name__}: {err}"), 503
        return jsonify(status="ok", prediction_ms=round(1000 * (time.perf_counter() - started), 1),
                       probe_class=probe["predicted_class"], model=model_info(predictor),
                       gradcam=gradcam.available, disclaimer=DISCLAIMER)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_err):
        return refuse(413, f"The upload is larger than the {limits['upload']} limit: send a "
                           "smaller photo.")

    @app.errorhandler(MethodNotAllowed)
    def wrong_method(err):
        allow = ", ".join(sorted(err.valid_methods or ()))
        return refuse(405, f"{request.method} is not allowed on {request.path} (allowed: "
                           f"{allow}).", {"Allow": allow})

    @app.errorhandler(404)
    def not_found(_err):
        return refuse(404, f"There is nothing at {request.path}.")

    @app.errorhandler(500)
    def server_error(_err):
        return refuse(500, "Something went wrong while analysing the image; the server is "
                           "still running.")

    return app
