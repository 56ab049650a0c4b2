"""Resumable, hash-checked downloads.

A file is streamed to ``<name>.part`` beside its destination. An interrupted transfer leaves the
``.part`` file, and the next call resumes it with an HTTP ``Range`` request. The checksum (and
size) are checked *after* the transfer, and only a file that passes is moved into place; one that
fails is deleted so that the next call starts afresh.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm.auto import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or produced a file that does not match its registered checksum."""


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its name on disk, URL and what it must hash to.

    ``sha256`` or ``md5`` (Dataverse publishes MD5) is checked after download when given;
    ``size`` in bytes too.
    """

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(resource: Resource, path: Path) -> None:
    """Raise :class:`DownloadError` if ``path`` does not match the resource's size and hashes."""
    actual_size = path.stat().st_size
    if resource.size is not None and actual_size != resource.size:
        raise DownloadError(
            f"{resource.name}: size {actual_size} bytes, expected {resource.size} bytes."
        )
    for algorithm in ("sha256", "md5"):
        expected = getattr(resource, algorithm)
        if expected:
            actual = _digest(path, algorithm)
            if actual != expected.lower():
                raise DownloadError(
                    f"{resource.name}: {algorithm} {actual} does not match the registered "
                    f"{expected}. The file was deleted; run the download again. If it keeps "
                    f"failing, the source may have changed: check {resource.url}"
                )


def fetch(resource: Resource, dest_dir: str | os.PathLike, *, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download ``resource`` into ``dest_dir`` unless a verified copy is already there.

    Resumes a partial ``.part`` file with an HTTP range request; a server that ignores the range
    (status 200) makes the download start again from zero. Returns the final path.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / resource.name
    if final.exists():
        verify(resource, final)
        return final
    part = final.with_name(final.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(resource.url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416:  # the .part file is already complete
                pass
            else:
                resp.raise_for_status()
                if offset and resp.status_code != 206:
                    offset = 0  # the server ignored the range: start over
                total = resp.headers.get("Content-Length")
                total = int(total) + offset if total is not None else resource.size
                with open(part, "ab" if offset else "wb") as out, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True,
                    desc=resource.name, disable=not progress, leave=False,
                ) as bar:
                    for chunk in resp.iter_content(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                received = part.stat().st_size
                if total is not None and received < total:
                    raise DownloadError(
                        f"{resource.name}: transfer cut off at {received} of {total} bytes; "
                        f"run the download again to resume from {part}."
                    )
    except requests.RequestException as err:
        raise DownloadError(
            f"{resource.name}: download from {resource.url} failed ({err}). What arrived is kept "
            f"in {part}; run the download again to resume."
        ) from err
    try:
        verify(resource, part)
    except DownloadError:
        part.unlink()
        raise
    part.replace(final)
    return final
