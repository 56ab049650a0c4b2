"""The web app: the JSON API for good and bad input (Flask test client), the page in a real
headless Chromium (Debian's chromium through Playwright), and the command that serves it.

Uses the tiny real run of ``test_export`` (MobileNet 0.25 + head trained on real images).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from helpers import DISCLAIMER
from helpers.webapp import InMemoryRequest, create_app
from test_export import tiny_run  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lesion(ham_sample) -> dict[str, bytes]:
    """A real lesion photo and variants of it, as bytes."""
    path = Path(ham_sample["path"].iloc[0])
    image = Image.open(path)
    return {"jpeg": path.read_bytes(), "png": encode(image, "PNG"),
            "gray": encode(image.convert("L"), "PNG"), "gif": encode(image, "GIF"),
            "truncated": path.read_bytes()[:1500], "tiny": encode(image.resize((20, 15)), "PNG")}


@pytest.fixture(scope="module")
def keras_app(tiny_run):
    return create_app(tiny_run / "model.keras", max_upload_mb=1)


@pytest.fixture(scope="module")
def tflite_app(tiny_run):
    return create_app(tiny_run / "tflite" / "int8.tflite", max_upload_mb=1)


def post(app, data: bytes, name: str = "photo.jpg", query: str = ""):
    return app.test_client().post(f"/api/predict{query}", data={"image": (io.BytesIO(data), name)})


# --- the JSON API -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_api_predicts_a_real_image(keras_app, lesion, kind):
    reply = post(keras_app, lesion[kind], f"lesion.{kind}")
    assert reply.status_code == 200
    result = reply.get_json()
    probs = result["probabilities"]
    assert list(probs) == keras_app.config["PREDICTOR"].classes
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert result["predicted_class"] == max(probs, key=probs.get)
    assert [t["probability"] for t in result["top"]] == sorted(probs.values(), reverse=True)[:5]
    assert result["disclaimer"] == DISCLAIMER
    assert result["notes"] == []


def test_api_adds_gradcam_on_request_for_keras_models(keras_app, lesion):
    result = post(keras_app, lesion["jpeg"], query="?gradcam=1").get_json()
    assert result["gradcam"]["available"] is True
    overlay = Image.open(io.BytesIO(__import__("base64").b64decode(result["gradcam"]["png_base64"])))
    assert overlay.format == "PNG" and min(overlay.size) > 32


def test_tflite_app_serves_without_gradcam_and_says_why(tflite_app, lesion):
    reply = post(tflite_app, lesion["jpeg"], query="?gradcam=1")
    assert reply.status_code == 200
    gradcam = reply.get_json()["gradcam"]
    assert gradcam["available"] is False and "TFLite" in gradcam["reason"]


def test_api_accepts_the_raw_image_as_body(tflite_app, lesion):
    reply = tflite_app.test_client().post("/api/predict", data=lesion["jpeg"],
                                          content_type="image/jpeg")
    assert reply.status_code == 200 and reply.get_json()["predicted_class"]


@pytest.mark.parametrize("kind, name, status, words", [
    ("text", "notes.txt", 415, "not an image"),
    ("gif", "lesion.gif", 415, "GIF"),
    ("truncated", "broken.jpg", 422, "truncated"),
    ("tiny", "tiny.png", 422, "too small"),
    ("empty", "empty.jpg", 400, "No image"),
])
def test_api_rejects_bad_input_with_a_clear_status(tflite_app, lesion, kind, name, status, words):
    extra = {"text": b"this is not a photo\n", "empty": b""}
    data = extra[kind] if kind in extra else lesion[kind]
    reply = post(tflite_app, data, name)
    assert reply.status_code == status
    assert words in reply.get_json()["error"]


def test_api_rejects_a_file_over_the_upload_limit_with_413(tflite_app):
    reply = post(tflite_app, b"\xff\xd8" + b"0" * (2 * 1024 * 1024), "huge.jpg")
    assert reply.status_code == 413
    assert "1 MB" in reply.get_json()["error"]


def test_api_rejects_too_many_pixels_with_413(tflite_app):
    bomb = encode(Image.new("L", (8000, 5100)), "PNG")  # 40.8 megapixels, a few KB
    reply = post(tflite_app, bomb, "bomb.png")
    assert reply.status_code == 413
    assert "megapixels" in reply.get_json()["error"]


def test_api_accepts_grayscale_with_a_note(tflite_app, lesion):
    reply = post(tflite_app, lesion["gray"], "gray.png")
    assert reply.status_code == 200
    assert any("grayscale" in note for note in reply.get_json()["notes"])


def test_server_keeps_serving_after_bad_input(tflite_app, lesion):
    for data in (b"junk", lesion["truncated"], lesion["tiny"]):
        assert post(tflite_app, data).status_code >= 400
    assert post(tflite_app, lesion["jpeg"]).status_code == 200


def test_uploads_are_kept_in_memory_not_spooled_to_disk(keras_app, lesion):
    big = lesion["png"] * 8  # > 500 KB: Werkzeug's default would spool this to a temp file
    with keras_app.test_request_context("/", method="POST",
                                        data={"image": (io.BytesIO(big), "big.png")}):
        from flask import request

        assert isinstance(request._get_current_object(), InMemoryRequest)
        assert isinstance(request.files["image"].stream, io.BytesIO)


def test_page_shows_result_and_errors_without_javascript(keras_app, lesion):
    client = keras_app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and DISCLAIMER.encode() in page.data
    good = client.post("/", data={"image": (io.BytesIO(lesion["jpeg"]), "lesion.jpg")})
    assert good.status_code == 200
    assert b'id="result"' in good.data and b'id="gradcam"' in good.data
    bad = client.post("/", data={"image": (io.BytesIO(b"hello"), "notes.txt")})
    assert bad.status_code == 415 and b'id="error"' in bad.data and b"not an image" in bad.data


def test_health_and_unknown_endpoints(tflite_app):
    client = tflite_app.test_client()
    health = client.get("/api/health").get_json()
    assert health["status"] == "ok" and health["model"]["kind"] == "tflite"
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/api/predict").status_code == 405


# --- in a real browser ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server_url(keras_app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, keras_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_browser_upload_shows_the_result(browser, server_url, lesion, tmp_path):
    photo = tmp_path / "lesion.jpg"
    photo.write_bytes(lesion["jpeg"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server_url)
    assert "not a diagnosis" in page.inner_text("#disclaimer")
    page.set_input_files("#image-input", str(photo))
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#submit")
    page.wait_for_selector("#result", timeout=30_000)
    assert page.locator("#bars tr").count() == 5
    assert page.locator("#uploaded").evaluate("img => img.naturalWidth") > 0
    assert page.locator("#gradcam").evaluate("img => img.naturalWidth") > 0
    assert page.inner_text("#predicted-class")
    assert errors == []
    page.close()


def test_browser_upload_of_a_text_file_shows_the_error(browser, server_url, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo")
    page = browser.new_page()
    page.goto(server_url)
    page.set_input_files("#image-input", str(text))
    page.click("#submit")
    page.wait_for_selector("#error")
    assert "not an image" in page.inner_text("#error")
    assert page.locator("#result").count() == 0
    page.close()


def test_browser_drop_of_a_file_submits_it(browser, server_url, lesion):
    page = browser.new_page()
    page.goto(server_url)
    data = list(lesion["png"])
    page.evaluate("""data => {
        const file = new File([new Uint8Array(data)], 'dropped.png', {type: 'image/png'});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        document.getElementById('drop-zone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", data)
    page.wait_for_selector("#result", timeout=30_000)
    assert "dropped.png" in page.inner_text("#result")
    page.close()


# --- the command --------------------------------------------------------------------------------

def test_command_serves_a_tflite_model(tiny_run, lesion):
    """``python -m helpers.webapp --model X.tflite --port 0`` starts, answers, and stops."""
    command = [sys.executable, "-m", "helpers.webapp", "--port", "0",
               "--model", str(tiny_run / "tflite" / "int8.tflite")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        first = process.stdout.readline()
        assert "http://127.0.0.1:" in first, first + process.stderr.read()
        url = first.split()[3]
        health = json.load(urllib.request.urlopen(url + "api/health", timeout=30))
        assert health["model"]["file"] == "int8.tflite"
        boundary = "skinbookboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                f"filename=\"lesion.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        body += lesion["jpeg"] + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            url + "api/predict", data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        result = json.load(urllib.request.urlopen(request, timeout=30))
        assert result["predicted_class"] in result["probabilities"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_command_reports_a_missing_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "helpers.webapp", "--model",
                           str(tmp_path / "none.tflite")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "not found" in done.stderr


def test_templates_and_static_files_are_package_data():
    package = REPO / "helpers" / "webapp"
    assert (package / "templates" / "index.html").exists()
    assert {p.name for p in (package / "static").iterdir()} >= {"app.css", "app.js"}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"helpers.webapp" = ["templates/*.html", "static/*.css", "static/*.js"]' in pyproject
