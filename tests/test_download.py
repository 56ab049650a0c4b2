"""helpers.download against a real HTTP server on 127.0.0.1 (no mocks).

The server honours ``Range`` requests, or ignores them, or cuts the connection part-way, or
serves the wrong bytes, depending on its ``mode``; it logs every request it sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

import helpers
from helpers import datasets
from helpers.download import CHUNK, DownloadError, Resource, fetch


class FileServer:
    """Serves ``files`` (URL path -> bytes) over HTTP/1.1 on 127.0.0.1 in a thread.

    ``mode``: ``"range"`` honours byte ranges (206 / 416), ``"ignore-range"`` always answers 200
    with the whole file, ``"range-from-zero"`` answers 206 but from byte 0, ``"wrong"`` serves
    other bytes of the same length. ``cuts``: URL path -> number of body bytes the next
    response for that path sends before dropping the connection (used once).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode = "range"
        self.cuts: dict[str, int] = {}
        self.log: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.lstrip('/')}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?")[0]
        range_header = req.headers.get("Range")
        entry = {"path": path, "range": range_header, "status": None}
        self.log.append(entry)
        if path not in self.files:
            entry["status"] = 404
            req.send_response(404)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        data = self.files[path]
        if self.mode == "wrong":
            data = bytes(reversed(data))
        start = 0
        if range_header and self.mode != "ignore-range":
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if self.mode == "range-from-zero":  # a broken server: 206, but for another range
                start = 0
            if start >= len(data):
                entry["status"] = 416
                req.send_response(416)
                req.send_header("Content-Range", f"bytes */{len(data)}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
            entry["status"] = 206
            req.send_response(206)
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            entry["status"] = 200
            req.send_response(200)
        body = data[start:]
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Accept-Ranges", "bytes")
        req.end_headers()
        if path in self.cuts:
            cut = self.cuts.pop(path)
            entry["cut_at"] = cut
            req.wfile.write(body[:cut])
            req.wfile.flush()
            req.close_connection = True  # the client sees the connection end mid-body
            return
        req.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def resource_for(server: FileServer, name: str, data: bytes, **overrides) -> Resource:
    server.files[f"/{name}"] = data
    fields = {"name": name, "url": server.url(name), "sha256": hashlib.sha256(data).hexdigest(),
              "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
    fields.update(overrides)
    return Resource(**fields)


def test_full_download_is_verified_and_moved_into_place(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    path = fetch(res, tmp_path, progress=False)
    assert path == tmp_path / "file.bin"
    assert path.read_bytes() == data
    assert not (tmp_path / "file.bin.part").exists()
    assert [e["range"] for e in server.log] == [None]


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    (tmp_path / "file.bin.part").write_bytes(data[:120_000])
    path = fetch(res, tmp_path, progress=False)
    assert server.log == [{"path": "/file.bin", "range": "bytes=120000-", "status": 206}]
    assert path.read_bytes() == data


def test_server_ignoring_the_range_restarts_from_zero(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    server.mode = "ignore-range"
    (tmp_path / "file.bin.part").write_bytes(b"x" * 50_000)  # would corrupt the file if appended
    path = fetch(res, tmp_path, progress=False)
    assert server.log[0]["range"] == "bytes=50000-" and server.log[0]["status"] == 200
    assert path.read_bytes() == data


def test_partial_answer_for_another_range_restarts_from_zero(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    server.mode = "range-from-zero"
    (tmp_path / "file.bin.part").write_bytes(data[:50_000])
    path = fetch(res, tmp_path, progress=False)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=50000-", 206), (None, 200)]
    assert path.read_bytes() == data


def test_complete_part_file_is_verified_when_server_answers_416(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    (tmp_path / "file.bin.part").write_bytes(data)
    path = fetch(res, tmp_path, progress=False)
    assert [e["status"] for e in server.log] == [416]
    assert path.read_bytes() == data


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_wrong_checksum_is_rejected_and_nothing_kept(server, tmp_path, algorithm):
    data = payload()
    res = resource_for(server, "file.bin", data)
    if algorithm == "md5":
        res = dataclasses.replace(res, sha256=None)
    server.mode = "wrong"  # same length, other bytes: only the checksum can tell
    with pytest.raises(DownloadError, match=rf"file.bin: {algorithm} [0-9a-f]+ does not match"):
        fetch(res, tmp_path, progress=False)
    assert not (tmp_path / "file.bin").exists()
    assert not (tmp_path / "file.bin.part").exists()


def test_wrong_size_is_rejected(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data, size=len(data) + 1)
    with pytest.raises(DownloadError, match="size 300000 bytes, expected 300001"):
        fetch(res, tmp_path, progress=False)
    assert not (tmp_path / "file.bin").exists() and not (tmp_path / "file.bin.part").exists()


def test_interrupted_transfer_keeps_part_and_next_call_resumes(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    server.cuts["/file.bin"] = 100_000
    with pytest.raises(DownloadError, match="run the download again to resume"):
        fetch(res, tmp_path, progress=False)
    part = tmp_path / "file.bin.part"
    kept = part.stat().st_size  # whole chunks that arrived before the cut (a partial one is lost)
    assert 0 < kept <= 100_000
    assert part.read_bytes() == data[:kept]
    assert not (tmp_path / "file.bin").exists()

    path = fetch(res, tmp_path, progress=False)
    assert server.log[-1] == {"path": "/file.bin", "range": f"bytes={kept}-", "status": 206}
    assert path.read_bytes() == data
    assert not part.exists()


def test_interrupted_resume_can_be_resumed_again(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    part = tmp_path / "file.bin.part"
    server.cuts["/file.bin"] = 100_000
    with pytest.raises(DownloadError):
        fetch(res, tmp_path, progress=False)
    first = part.stat().st_size
    server.cuts["/file.bin"] = 100_000  # the resumed transfer breaks too
    with pytest.raises(DownloadError):
        fetch(res, tmp_path, progress=False)
    second = part.stat().st_size
    assert 0 < first < second < len(data)
    assert part.read_bytes() == data[:second]
    assert fetch(res, tmp_path, progress=False).read_bytes() == data
    assert [e["range"] for e in server.log] == [None, f"bytes={first}-", f"bytes={second}-"]


def test_verified_file_already_present_is_not_downloaded_again(server, tmp_path):
    data = payload()
    res = resource_for(server, "file.bin", data)
    fetch(res, tmp_path, progress=False)
    mtime = (tmp_path / "file.bin").stat().st_mtime_ns
    server.log.clear()
    assert fetch(res, tmp_path, progress=False).read_bytes() == data
    assert server.log == []
    assert (tmp_path / "file.bin").stat().st_mtime_ns == mtime


def test_present_file_that_fails_verification_is_downloaded_again(server, tmp_path, capsys):
    data = payload()
    res = resource_for(server, "file.bin", data)
    (tmp_path / "file.bin").write_bytes(data[:-1] + b"\0")
    assert fetch(res, tmp_path, progress=False).read_bytes() == data
    assert len(server.log) == 1
    assert "does not match" in capsys.readouterr().out


def test_without_checksum_the_sha256_is_printed_and_called_unverified(server, tmp_path, capsys):
    data = payload()
    res = resource_for(server, "file.bin", data, sha256=None, md5=None, size=None)
    fetch(res, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "could NOT be verified" in out
    assert hashlib.sha256(data).hexdigest() in out


def test_missing_file_on_server_raises_download_error_naming_the_url(server, tmp_path):
    res = Resource(name="nothing.bin", url=server.url("nothing.bin"))
    with pytest.raises(DownloadError, match="nothing.bin.*404"):
        fetch(res, tmp_path, progress=False)
    assert not (tmp_path / "nothing.bin").exists()
    assert not (tmp_path / "nothing.bin.part").exists()


def test_unreachable_server_raises_download_error(tmp_path):
    srv = FileServer()
    url = srv.url("file.bin")
    srv.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match="failed"):
        fetch(Resource(name="file.bin", url=url), tmp_path, progress=False, timeout=5)


# --- end to end: a tiny HAM10000 "Dataverse" served locally ------------------------------------

def _fake_ham_files(ham_sample: pd.DataFrame, ham_dir: Path, out: Path) -> dict[str, bytes]:
    """Metadata CSV (Dataverse variant) and two zips of real images, like the official files."""
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    meta = meta[meta["image_id"].isin(ham_sample["image_id"])]
    files = {"HAM10000_metadata.csv": meta.to_csv(index=False).encode()}
    half = len(ham_sample) // 2
    for i, rows in enumerate((ham_sample.iloc[:half], ham_sample.iloc[half:]), start=1):
        zpath = out / f"part_{i}.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for path in rows["path"]:
                zf.write(path, arcname=Path(path).name)  # images at the zip root, as on Dataverse
        files[f"HAM10000_images_part_{i}.zip"] = zpath.read_bytes()
    return files


def test_download_of_a_local_fake_registry_then_load(server, tmp_path, monkeypatch,
                                                     ham_sample, ham_dir):
    files = _fake_ham_files(ham_sample, ham_dir, tmp_path)
    resources = tuple(
        resource_for(server, name, data, sha256=None) for name, data in files.items()
    )  # md5 + size only, like the real registry
    info = datasets.REGISTRY["ham10000"]
    monkeypatch.setitem(datasets.REGISTRY, "ham10000",
                        dataclasses.replace(info, resources=resources))
    root = tmp_path / "data"
    zip_size = len(files["HAM10000_images_part_1.zip"])
    assert zip_size > CHUNK + 1000
    server.cuts["/HAM10000_images_part_1.zip"] = zip_size - 1000  # breaks: the command is re-run
    with pytest.raises(DownloadError):
        datasets.download("ham10000", root, progress=False)
    kept = (root / "ham10000" / "HAM10000_images_part_1.zip.part").stat().st_size
    assert (root / "ham10000" / "HAM10000_metadata.csv").exists()
    folder = datasets.download("ham10000", root, progress=False)
    assert folder == root / "ham10000"
    assert [(e["path"], e["range"]) for e in server.log] == [
        ("/HAM10000_metadata.csv", None), ("/HAM10000_images_part_1.zip", None),
        ("/HAM10000_images_part_1.zip", f"bytes={kept}-"), ("/HAM10000_images_part_2.zip", None)]

    table = datasets.load_ham10000(root)
    assert len(table) == len(ham_sample)
    assert set(table["image_id"]) == set(ham_sample["image_id"])
    assert all(Path(p).parent == folder / "images" for p in table["path"])
    for ours, real in zip(table.sort_values("image_id")["path"],
                          ham_sample.sort_values("image_id")["path"]):
        assert Path(ours).read_bytes() == Path(real).read_bytes()
    assert table["label"].astype(str).tolist() == (
        table["image_id"].map(ham_sample.set_index("image_id")["label"].astype(str)).tolist())

    # unpacked zips leave a marker: deleting the zips does not trigger a new download
    for name in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"):
        (folder / name).unlink()
    server.log.clear()
    datasets.download("ham10000", root, progress=False)
    assert server.log == []


def test_download_of_a_dataset_without_resources_explains_how_to_get_it(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="kaggle datasets download"):
        datasets.download("melanoma10k", tmp_path)


def test_registered_ham10000_resources_are_verifiable(server, tmp_path):
    """Every registered file carries an MD5 and a size that fetch() enforces: served through a
    local server, bytes of the right length but other content are rejected by the MD5 check."""
    for res in datasets.HAM10000_RESOURCES:
        assert re.fullmatch(r"[0-9a-f]{32}", res.md5) and res.size > 0 and res.verifiable
        assert res.url.startswith("https://dataverse.harvard.edu/api/access/datafile/")
    small = min(datasets.HAM10000_RESOURCES, key=lambda r: r.size)  # the metadata file
    server.files[f"/{small.name}"] = payload(small.size)
    local = dataclasses.replace(small, url=server.url(small.name))
    with pytest.raises(DownloadError, match=rf"{small.name}: md5 [0-9a-f]+ does not match"):
        fetch(local, tmp_path, progress=False)
    assert not (tmp_path / small.name).exists()


# --- the lesion masks (chapter 06): a fake HAM10000_segmentations_lesion_tschandl.zip --------------

MASK_IDS = ("ISIC_0024306", "ISIC_0024307", "ISIC_0024308")


def _fake_masks_zip(out: Path) -> bytes:
    """A zip laid out like Dataverse's: masks in a folder, plus macOS ``__MACOSX/._*`` stubs."""
    from PIL import Image

    zpath = out / "masks.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i, image_id in enumerate(MASK_IDS):
            png = out / f"{image_id}_segmentation.png"
            mask = Image.new("L", (60, 45), 0)
            mask.paste(255, (10 + i, 10, 40, 35))  # a lesion-shaped white box
            mask.save(png)
            zf.write(png, arcname=f"HAM10000_segmentations_lesion_tschandl/{png.name}")
        zf.writestr(f"__MACOSX/HAM10000_segmentations_lesion_tschandl/._{MASK_IDS[0]}"
                    f"_segmentation.png", b"\0" * 233)
    return zpath.read_bytes()


def _registry_with(monkeypatch, *resources: Resource) -> None:
    info = datasets.REGISTRY["ham10000"]
    monkeypatch.setitem(datasets.REGISTRY, "ham10000",
                        dataclasses.replace(info, resources=resources))


def test_masks_zip_is_downloaded_verified_and_unpacked_into_masks(server, tmp_path, monkeypatch):
    """Served locally under its registered name, with the size and MD5 of the test's own zip (the
    real file is not available offline), the masks land in ham10000/masks/ as chapter 06 and
    check_prerequisites(masks=True) expect them; ``only`` fetches nothing else."""
    from helpers import config, explain

    name = datasets.HAM10000_MASKS.name
    data = _fake_masks_zip(tmp_path)
    masks = resource_for(server, name, data, sha256=None)  # md5 + size, like the registry
    metadata = resource_for(server, "HAM10000_metadata.csv", b"lesion_id,image_id\n", sha256=None)
    _registry_with(monkeypatch, metadata, masks)
    root = tmp_path / "data"

    folder = datasets.download("ham10000", root, progress=False, only=[name])
    assert [e["path"] for e in server.log] == [f"/{name}"]  # the metadata was left alone
    target = folder / "masks"
    assert target == root / "ham10000" / "masks"
    assert sorted(p.name for p in target.iterdir()) == [f"{i}_segmentation.png" for i in MASK_IDS]
    with zipfile.ZipFile(folder / name) as zf:  # byte for byte what the zip holds, flattened
        assert (target / f"{MASK_IDS[1]}_segmentation.png").read_bytes() == zf.read(
            f"HAM10000_segmentations_lesion_tschandl/{MASK_IDS[1]}_segmentation.png")
    assert (folder / f".{name}.unpacked").read_text().strip() == masks.md5
    assert not (folder / "images").exists()

    loaded = explain.load_masks(list(MASK_IDS), (45, 60), data_root=root)
    assert loaded.shape == (3, 45, 60) and loaded[0, 10:35, 10:40].all()
    assert loaded[0].sum() == 25 * 30  # the white box, nothing else
    ctx = helpers.Context(chapter="06", profile=config.load_profile("smoke"), data_root=root,
                          runs=tmp_path / "runs", figures=tmp_path / "figures")
    checklist = ctx.check_prerequisites(masks=True)
    assert checklist.loc["HAM10000 lesion masks", "found"] == "yes"

    server.log.clear()  # a later full download skips the unpacked masks and fetches the rest
    (folder / name).unlink()
    datasets.download("ham10000", root, progress=False)
    assert [e["path"] for e in server.log] == ["/HAM10000_metadata.csv"]


def test_masks_zip_with_a_wrong_checksum_is_refused(server, tmp_path, monkeypatch):
    name = datasets.HAM10000_MASKS.name
    data = _fake_masks_zip(tmp_path)
    _registry_with(monkeypatch, resource_for(server, name, data, sha256=None))
    server.mode = "wrong"  # same length, other bytes
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=rf"{name}: md5 [0-9a-f]+ does not match"):
        datasets.download("ham10000", root, progress=False)
    folder = root / "ham10000"
    assert not (folder / name).exists() and not (folder / f"{name}.part").exists()
    assert not (folder / "masks").exists() and not (folder / f".{name}.unpacked").exists()


def test_missing_masks_name_the_download_command(tmp_path):
    from helpers import config

    ctx = helpers.Context(chapter="06", profile=config.load_profile("smoke"), data_root=tmp_path,
                          runs=tmp_path / "runs", figures=tmp_path / "figures")
    with pytest.raises(helpers.ChapterOrderError) as failure:
        ctx.check_prerequisites(masks=True)
    assert (f"python -m helpers.datasets download ham10000 --only "
            f"{datasets.HAM10000_MASKS.name}") in str(failure.value)


def test_registered_masks_resource_and_only_rejects_unknown_names(tmp_path):
    masks = datasets.HAM10000_MASKS
    assert masks in datasets.HAM10000_RESOURCES
    assert masks.name == "HAM10000_segmentations_lesion_tschandl.zip"
    assert masks.url == "https://dataverse.harvard.edu/api/access/datafile/3838943"
    assert masks.md5 == "6e8d252e09cfdb0189199f15985a5b84" and masks.size == 10_808_743
    assert datasets.UNPACK_INTO[masks.name] == "masks"
    with pytest.raises(ValueError, match="no registered file masks.zip"):
        datasets.download("ham10000", tmp_path, only=["masks.zip"])
