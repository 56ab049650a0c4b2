"""The web app as a service: ``python -m helpers.webapp`` started as a real waitress server on a
free 127.0.0.1 port, spoken to over real HTTP (bad input, headers, timeouts, memory), and its
page driven in a real headless Chromium (Debian's chromium through Playwright) at phone and
desktop sizes, with screenshots saved under ``tests/_artifacts/``.

Uses the tiny real run of ``test_export`` (MobileNet 0.25 + head trained on real images).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from helpers import DISCLAIMER
from helpers.webapp import InMemoryRequest, create_app
from helpers.webapp.results import percent
from test_decoding import bad_inputs, encode
from test_export import tiny_run  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "_artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HAM_CLASSES = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
READ_TIMEOUT = 2
BOMB_GROWTH_MB = 50
"""Peak-RSS rise allowed for 4 concurrent 40-megapixel bombs (refused from their header)."""
NEAR_LIMIT_GROWTH_MB = 500
"""Peak-RSS rise allowed for 4 concurrent 12.9-megapixel RGBA PNGs: the worst photo accepted
(PNG has no draft mode; two decode slots, each about two full-size copies, plus allocator
slack: 220-390 MB measured). Before the decoder was bounded, one 40-megapixel PNG took about
680 MB and four 3.9 GB."""


@dataclass
class Server:
    url: str
    pid: int
    log: Path

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM), in MB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{")]


@contextmanager
def serve(model: Path, folder: Path, *args: str) -> Iterator[Server]:
    """``python -m helpers.webapp --model MODEL --port 0 ARGS`` until the block ends."""
    log = folder / f"server-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "helpers.webapp", "--model", str(model), "--port", "0", *args],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (found := re.search(r"http://127\.0\.0\.1:\d+/", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield Server(found.group(0), process.pid, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def lesion(ham_sample) -> dict[str, bytes]:
    """A real lesion photo and variants of it, as bytes."""
    path = Path(ham_sample["path"].iloc[0])
    image = Image.open(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left, shown upright
    return {"jpeg": path.read_bytes(), "png": encode(image, "PNG"),
            "webp": encode(image, "WEBP", quality=90),
            "mpo": encode(image, "MPO", save_all=True, append_images=[image.resize((100, 75))]),
            "rotated": encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
            "gray": encode(image.convert("L"), "PNG")}


@pytest.fixture(scope="module")
def bad_files(ham_sample, tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    photo = Image.open(ham_sample["path"].iloc[0]).convert("RGB")
    return bad_inputs(photo, tmp_path_factory.mktemp("bad_uploads"))


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory) -> Iterator[Server]:
    """The int8 TFLite model behind waitress, 1 MB upload limit, 2 s read timeout."""
    with serve(tiny_run / "tflite" / "int8.tflite", tmp_path_factory.mktemp("server"),
               "--max-upload-mb", "1", "--read-timeout", str(READ_TIMEOUT)) as running:
        yield running


def upload(server: Server, data: bytes, name: str = "lesion.jpg", path: str = "api/predict",
           **options) -> requests.Response:
    return requests.post(server.url + path, files={"image": (name, data)}, timeout=60, **options)


# --- good photos ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpeg", "png", "webp", "mpo", "rotated"])
def test_real_photos_get_every_class_renormalised(server, lesion, kind):
    reply = upload(server, lesion[kind], f"lesion.{kind}")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    probs = result["probabilities"]
    assert set(probs) == HAM_CLASSES
    assert sum(probs.values()) == pytest.approx(1.0, abs=2e-6)  # int8 outputs renormalised
    assert [item["class"] for item in result["top"]] == sorted(probs, key=probs.get, reverse=True)
    assert {item["class"] for item in result["top"] if item["malignant"]} == {"mel", "bcc",
                                                                               "akiec"}
    assert all(item["percent"] == percent(item["probability"]) for item in result["top"])
    assert result["image"]["format"] == {"png": "PNG", "webp": "WebP"}.get(kind, "JPEG")
    assert (result["image"]["width"], result["image"]["height"]) == (200, 150)
    assert result["image"]["rotated"] == (kind == "rotated")
    assert result["disclaimer"] == DISCLAIMER and result["notes"] == []


def test_raw_body_and_grayscale_with_a_note(server, lesion):
    raw = requests.post(server.url + "api/predict", data=lesion["jpeg"], timeout=60,
                        headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["predicted_class"] in HAM_CLASSES
    gray = upload(server, lesion["gray"], "gray.png")
    assert gray.status_code == 200
    assert any("grayscale" in note for note in gray.json()["notes"])


def test_percentages_are_never_rounded_to_a_false_100_or_0():
    assert [percent(p) for p in (1.0, 0.99951, 0.9994, 0.5, 0.00049, 0.0)] == \
        ["100.0%", ">99.9%", "99.9%", "50.0%", "<0.1%", "0.0%"]


# --- bad input -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def command_errors(tiny_run, bad_files) -> dict[str, str]:
    """What ``python -m helpers.predict`` prints for each bad file, with the path as its name."""
    paths = [path for path, _, _ in bad_files.values()]
    done = subprocess.run([sys.executable, "-m", "helpers.predict", "--model",
                           str(tiny_run / "tflite" / "int8.tflite"), *map(str, paths)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {Path(line["file"]).name: line["error"].replace(line["file"], Path(line["file"]).name)
            for line in lines}


def test_bad_photos_get_their_status_and_the_commands_message(server, bad_files,
                                                              command_errors):
    assert set(command_errors) == set(bad_files)
    for name, (path, status, words) in bad_files.items():
        reply = upload(server, path.read_bytes(), name)
        assert reply.status_code == status, (name, reply.text)
        assert words in reply.json()["error"]
        assert reply.json()["error"] == command_errors[name]


BIG = 1536 * 1024  # over the test server's 1 MB limit


@pytest.mark.parametrize("case, status, words", [
    ("no file", 400, "No image received"),
    ("text body", 415, "not as text/plain"),
    ("form-encoded body", 415, "not as application/x-www-form-urlencoded"),
    ("over the limit", 413, "larger than the 1 MB limit"),
    ("over the limit, chunked", 413, "larger than the 1 MB limit"),
    ("far over the limit, chunked", 413, "Request Entity Too Large"),
    ("over the limit, form", 413, "larger than the 1 MB limit"),
    ("unknown endpoint", 404, "nothing at /api/nothing"),
])
def test_bad_requests_get_their_status_and_message(server, case, status, words):
    url = server.url + "api/predict"
    jpeg = {"Content-Type": "image/jpeg"}
    chunks = lambda size: (b"\xff" * 65536 for _ in range(size // 65536))  # noqa: E731
    reply = {
        "no file": lambda: requests.post(url, files={"note": ("", b"")}, data={"x": "1"}),
        "text body": lambda: requests.post(url, data=b"hello", headers={
            "Content-Type": "text/plain"}),
        "form-encoded body": lambda: requests.post(url, data={"image": "photo.jpg"}),
        "over the limit": lambda: requests.post(url, data=b"\xff" * BIG, headers=jpeg),
        "over the limit, chunked": lambda: requests.post(url, data=chunks(BIG), headers=jpeg),
        "far over the limit, chunked": lambda: requests.post(url, data=chunks(2 * BIG),
                                                             headers=jpeg),
        "over the limit, form": lambda: requests.post(url, files={"image": ("big.jpg",
                                                                            b"\xff" * BIG)}),
        "unknown endpoint": lambda: requests.get(server.url + "api/nothing"),
    }[case]()
    assert reply.status_code == status, reply.text
    assert words in reply.text


def test_wrong_methods_get_405_with_allow(server):
    put = requests.put(server.url + "api/predict", data=b"x", timeout=30)
    assert put.status_code == 405 and put.headers["Allow"] == "OPTIONS, POST"
    assert "PUT is not allowed" in put.json()["error"]
    delete = requests.delete(server.url, timeout=30)
    assert delete.status_code == 405 and delete.headers["Allow"] == "GET, HEAD, OPTIONS, POST"


def test_unknown_hosts_and_cross_site_posts_are_refused(server, lesion):
    evil = requests.get(server.url, headers={"Host": "evil.example"}, timeout=30)
    assert evil.status_code == 400 and "host name" in evil.json()["error"]
    assert "evil" not in evil.text
    own_origin = server.url.rstrip("/")
    for path in ("", "api/predict"):
        other = upload(server, lesion["jpeg"], path=path,
                       headers={"Origin": "https://evil.example"})
        assert other.status_code == 403 and "this app's own page" in other.text.replace(
            "&#39;", "'")
        for headers in ({"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site", "Origin": own_origin}):
            assert upload(server, lesion["jpeg"], path=path, headers=headers).status_code == 403
        same = upload(server, lesion["jpeg"], path=path, headers={"Origin": own_origin,
                                                                  "Sec-Fetch-Site":
                                                                  "same-origin"})
        assert same.status_code == 200


def test_file_names_are_echoed_as_short_base_names(server, lesion):
    name = "../../../" + "x" * 5000 + ".jpg"
    result = upload(server, lesion["jpeg"], name).json()
    echoed = result["image"]["filename"]
    assert len(echoed) <= 80 and "/" not in echoed and echoed.endswith("\u2026.jpg")
    page = upload(server, lesion["jpeg"], name, path="")
    assert "x" * 81 not in page.text and "../" not in page.text


# --- headers, health, logs, timeouts, memory ------------------------------------------------------

def test_security_headers_and_no_store(server, lesion):
    responses = {"page": requests.get(server.url, timeout=30),
                 "result page": upload(server, lesion["jpeg"], path=""),
                 "api": upload(server, lesion["jpeg"]),
                 "static": requests.get(server.url + "static/app.css", timeout=30)}
    for what, reply in responses.items():
        assert reply.status_code == 200, what
        headers = reply.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Server"] == "skinbook"  # no server name with a version
        assert (headers.get("Cache-Control") == "no-store") == (what != "static"), what
    assert 'id="result"' in responses["result page"].text


def test_health_runs_a_real_prediction(server):
    health = requests.get(server.url + "api/health", timeout=30).json()
    assert health["status"] == "ok" and health["model"]["kind"] == "tflite"
    assert health["probe_class"] in HAM_CLASSES and health["prediction_ms"] > 0


def test_one_log_line_per_request_without_image_data(server, lesion):
    before = len(server.log_lines())
    requests.post(server.url + "api/predict", data=lesion["jpeg"], timeout=60,
                  headers={"Content-Type": "image/jpeg"})
    requests.get(server.url + "api/nothing", timeout=30)
    time.sleep(0.2)
    new = server.log_lines()[before:]
    assert [(line["method"], line["path"], line["status"]) for line in new] == \
        [("POST", "/api/predict", 200), ("GET", "/api/nothing", 404)]
    assert new[0]["in_bytes"] == len(lesion["jpeg"]) and new[0]["out_bytes"] > 500
    assert all(line["ms"] > 0 for line in new)
    assert all(len(line) < 300 for line in server.log.read_text().splitlines())


def test_a_stalled_upload_is_dropped_after_the_read_timeout(server, lesion):
    host, port = re.search(r"//([\d.]+):(\d+)/", server.url).groups()
    with socket.create_connection((host, int(port)), timeout=30) as stalled:
        stalled.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
                        + lesion["jpeg"][:1000])
        started = time.monotonic()
        assert stalled.recv(1024) == b""  # closed by the server, nothing answered
        waited = time.monotonic() - started
    assert READ_TIMEOUT - 0.5 < waited < 3 * READ_TIMEOUT + 1, waited
    assert requests.get(server.url + "api/health", timeout=30).status_code == 200


def concurrently(server: Server, data: bytes, n: int = 4) -> list[int]:
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(
        upload(server, data, "bomb.png").status_code)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_decompression_bombs_stay_under_the_memory_bound(tiny_run, lesion, tmp_path):
    """Peak RSS of the real server process with 4 concurrent bomb-style uploads."""
    bombs = {"40 MP PNG (38 KB)": encode(Image.new("L", (8000, 4990)), "PNG"),
             "JPEG claiming 6000x6000 (3.7 KB)":
                 encode(Image.new("RGB", (6000, 6000), (180, 120, 100)), "JPEG")[:3700]}
    near_limit = encode(Image.new("RGBA", (4150, 3100), (180, 120, 100, 200)), "PNG")
    with serve(tiny_run / "tflite" / "int8.tflite", tmp_path) as server:
        assert upload(server, lesion["jpeg"]).status_code == 200
        baseline = server.peak_rss_mb()
        for what, data in bombs.items():
            assert concurrently(server, data) == [413] * 4, what
        bomb_peak = server.peak_rss_mb()
        assert concurrently(server, near_limit) == [200] * 4
        near_peak = server.peak_rss_mb()
    print(f"peak RSS: baseline {baseline:.0f} MB, after 8 bombs {bomb_peak:.0f} MB, after 4 "
          f"12.9-megapixel RGBA PNGs {near_peak:.0f} MB")
    assert bomb_peak - baseline < BOMB_GROWTH_MB
    assert near_peak - baseline < NEAR_LIMIT_GROWTH_MB


def test_uploads_are_kept_in_memory_not_spooled_to_disk(tiny_run, lesion):
    app = create_app(tiny_run / "tflite" / "int8.tflite")
    big = lesion["png"] * 8  # > 500 KB: Werkzeug's default would spool this to a temp file
    with app.test_request_context("/", method="POST",
                                  data={"image": (io.BytesIO(big), "big.png")}):
        from flask import request

        assert isinstance(request._get_current_object(), InMemoryRequest)
        assert isinstance(request.files["image"].stream, io.BytesIO)


# --- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--model", "none.tflite"], "not found"),
    (["--model", "m.tflite", "--host", "0.0.0.0"], "--allowed-hosts"),
    (["--model", "m.tflite", "--host", "0.0.0.0", "--allowed-hosts", "*", "--debug"],
     "127.0.0.1 only"),
    (["--model", "m.tflite", "--threads", "0"], "--threads must be positive"),
])
def test_command_refuses_bad_settings(tmp_path, args, words):
    done = subprocess.run([sys.executable, "-m", "helpers.webapp", *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_debug_flag_serves_with_the_development_server(tiny_run, lesion, tmp_path):
    with serve(tiny_run / "tflite" / "int8.tflite", tmp_path, "--debug",
               "--max-megapixels", "0.02") as server:
        assert "development server" in server.log.read_text()
        reply = requests.get(server.url + "api/health", timeout=30)
        assert reply.status_code == 200 and reply.headers["Server"].startswith("Werkzeug")
        limited = upload(server, lesion["jpeg"])  # 200x150 = 0.03 megapixels
        assert limited.status_code == 413 and "more than the 0.02 accepted" in limited.text


def test_templates_and_static_files_are_package_data():
    package = REPO / "helpers" / "webapp"
    assert (package / "templates" / "index.html").exists()
    assert {p.name for p in (package / "static").iterdir()} >= {"app.css", "app.js"}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"helpers.webapp" = ["templates/*.html", "static/*.css", "static/*.js"]' in pyproject


# --- the page, without and with a browser ---------------------------------------------------------

def test_page_works_without_javascript(server, lesion):
    """A form post as a browser without JavaScript sends it: the unused camera input is empty."""
    files = [("image", ("", b"")), ("image", ("lesion.jpg", lesion["jpeg"], "image/jpeg"))]
    good = requests.post(server.url, files=files, timeout=60)
    assert good.status_code == 200 and 'id="result"' in good.text
    assert good.text.count("<progress") == 7 and DISCLAIMER in good.text
    assert 'capture="environment"' in good.text
    bad = requests.post(server.url, files={"image": ("notes.txt", b"hello")}, timeout=60)
    assert bad.status_code == 415 and 'id="error"' in bad.text and "not an image" in bad.text


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
def keras_server(tiny_run, tmp_path_factory) -> Iterator[Server]:
    """The Keras model (Grad-CAM) behind waitress, for the browser."""
    with serve(tiny_run / "model.keras", tmp_path_factory.mktemp("keras_server")) as running:
        yield running


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


@contextmanager
def open_page(browser, url: str, device: dict):
    """A page at ``url`` that records script errors and console errors (CSP violations)."""
    context = browser.new_context(**device)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    try:
        yield page, problems
    finally:
        context.close()


def analyse_in_browser(page, input_id: str, photo: Path) -> None:
    page.set_input_files(input_id, str(photo))
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#submit")
    page.wait_for_selector("#result", timeout=60_000)


def check_result(page) -> None:
    assert page.locator("#bars tr").count() == 7
    assert page.locator("#bars tr.malignant .flag").count() == 3
    assert page.locator("#uploaded").evaluate("img => img.naturalWidth") > 0
    assert page.inner_text("#predicted-class")
    assert "not a diagnosis" in page.inner_text("#result .disclaimer")


def test_phone_offers_camera_and_gallery(browser, keras_server, lesion, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(lesion["rotated"])
    with open_page(browser, keras_server.url, PHONE) as (page, problems):
        camera, gallery = page.locator("#camera-button"), page.locator("#gallery-button")
        assert camera.is_visible() and camera.inner_text() == "Take photo"
        assert gallery.is_visible() and gallery.inner_text() == "Choose from gallery"
        assert page.get_attribute("#camera-input", "capture") == "environment"
        assert not page.locator(".drop-hint").is_visible()
        assert "drop" not in page.inner_text("#drop-zone").lower()
        assert "not a diagnosis" in page.inner_text("#disclaimer")
        page.screenshot(path=ARTIFACTS / "webapp-phone.png")
        analyse_in_browser(page, "#camera-input", photo)
        check_result(page)
        uploaded = page.locator("#uploaded").evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert uploaded[0] > uploaded[1]  # the EXIF-rotated photo is shown upright (landscape)
        assert page.locator("#camera-button").is_visible()  # still the touch layout
        page.screenshot(path=ARTIFACTS / "webapp-phone-result.png")  # scrolled to #result
        assert problems == []


def test_desktop_upload_shows_every_class_and_gradcam(browser, keras_server, lesion, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    photo = tmp_path / "lesion.jpg"
    photo.write_bytes(lesion["jpeg"])
    with open_page(browser, keras_server.url, DESKTOP) as (page, problems):
        assert not page.locator("#camera-button").is_visible()
        assert page.locator(".drop-hint").is_visible()
        analyse_in_browser(page, "#image-input", photo)
        check_result(page)
        assert page.locator("#gradcam").evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=ARTIFACTS / "webapp-desktop-result.png", full_page=True)
        assert problems == []  # no script error, no Content-Security-Policy violation


def test_browser_shows_the_error_for_a_text_file(browser, keras_server, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo")
    with open_page(browser, keras_server.url, PHONE) as (page, _):
        page.set_input_files("#image-input", str(text))
        page.click("#submit")
        page.wait_for_selector("#error")
        assert "not an image" in page.inner_text("#error")
        assert page.locator("#result").count() == 0


def test_browser_drop_of_a_file_submits_it(browser, keras_server, lesion):
    with open_page(browser, keras_server.url, DESKTOP) as (page, _):
        page.evaluate("""data => {
            const file = new File([new Uint8Array(data)], 'dropped.png', {type: 'image/png'});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.getElementById('drop-zone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", list(lesion["png"]))
        page.wait_for_selector("#result", timeout=60_000)
        assert "dropped.png" in page.inner_text("#result")


def test_gradcam_over_the_api(keras_server, lesion):
    result = upload(keras_server, lesion["jpeg"], path="api/predict?gradcam=1").json()
    assert result["gradcam"]["available"] is True
    overlay = Image.open(io.BytesIO(base64.b64decode(result["gradcam"]["png_base64"])))
    assert overlay.format == "PNG" and min(overlay.size) > 32


def test_load_benchmark_runs_without_errors(tiny_run):
    """``bench/bench_webapp.py``, small: both servers answer every upload, ratios printed."""
    done = subprocess.run([sys.executable, "bench/bench_webapp.py", "--model",
                           str(tiny_run / "tflite" / "int8.tflite"), "--requests", "40",
                           "--concurrency", "4", "--warmup", "5", "--max-rss-growth-mb", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  no errors" in done.stdout
    assert re.search(r"waitress / development server .*throughput [\d.]+x, p50 [\d.]+x",
                     done.stdout)
