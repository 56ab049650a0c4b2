"""Resumable, hash-checked downloads.

A file is streamed to ``<name>.part`` beside its destination. An interrupted transfer leaves the
``.part`` file, and the next call resumes it with an HTTP ``Range`` request (a server that
ignores the range makes it start again from zero). The size and checksum are checked *after*
the transfer, and only a file that passes is moved into place; one that fails is deleted so that
the next call starts afresh. A resource registered without a checksum is still downloaded, but
the SHA-256 of what arrived is printed with a plain statement that it could not be verified.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm.auto import tqdm

CHUNK = 1 << 16
"""Bytes per read. A read that breaks off loses its partial chunk, so keep it small."""


class DownloadError(RuntimeError):
    """A download failed or produced a file that does not match its registered checksum."""


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its name on disk, URL and what it must hash to.

    ``sha256`` or ``md5`` (Dataverse publishes MD5) is checked after download when given;
    ``size`` in bytes too. With neither hash, the download cannot be verified (and says so).
    """

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    @property
    def verifiable(self) -> bool:
        """Whether a checksum is registered for this resource."""
        return bool(self.sha256 or self.md5)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(resource: Resource, path: Path) -> None:
    """Raise :class:`DownloadError` if ``path`` does not match the resource's size and hashes.

    Without a registered hash this only checks the size (if known) and prints the file's
    SHA-256, saying that it could not be verified.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if resource.size is not None and actual_size != resource.size:
        raise DownloadError(
            f"{resource.name}: size {actual_size} bytes, expected {resource.size} bytes "
            f"(source: {resource.url})."
        )
    for algorithm in ("sha256", "md5"):
        expected = getattr(resource, algorithm)
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                raise DownloadError(
                    f"{resource.name}: {algorithm} {actual} does not match the registered "
                    f"{expected}. The file was not kept; run the download again. If it keeps "
                    f"failing, the source may have changed: check {resource.url}"
                )
    if not resource.verifiable:
        print(f"{resource.name}: no checksum is registered, so this file could NOT be verified. "
              f"Its SHA-256 is {file_digest(path, 'sha256')} ({actual_size} bytes).")


def fetch(resource: Resource, dest_dir: str | os.PathLike, *, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download ``resource`` into ``dest_dir`` unless a verified copy is already there.

    Resumes a partial ``<name>.part`` file with an HTTP range request; a server that ignores the
    range (status 200) makes the download start again from zero. A transfer that breaks off
    raises :class:`DownloadError` and keeps the ``.part`` file for the next call to resume. A
    file that fails its checksum is deleted and :class:`DownloadError` raised. Returns the
    final path.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / resource.name
    if final.exists():
        try:
            verify(resource, final)
            return final
        except DownloadError as err:
            print(f"{err}\nThe existing {final} does not match: downloading it again.")
            final.unlink()
    part = final.with_name(final.name + ".part")
    _transfer(resource, part, progress=progress, timeout=timeout)
    try:
        verify(resource, part)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    part.replace(final)
    return final


def _transfer(resource: Resource, part: Path, *, progress: bool, timeout: float) -> None:
    """Stream the resource into ``part``, appending to what is there when the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: a compressed response would not match Content-Length or byte offsets.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    received = offset
    try:
        with requests.get(resource.url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416 and offset:
                return  # range not satisfiable: the .part file is already complete (verify says)
            resp.raise_for_status()
            if offset and resp.status_code == 206 and not _resumes_at(resp, offset):
                # a partial answer for some other range: drop what we have and start over
                resp.close()
                part.unlink()
                return _transfer(resource, part, progress=progress, timeout=timeout)
            if offset and resp.status_code != 206:
                offset = 0  # the server ignored the range: start again from zero
            length = resp.headers.get("Content-Length")
            total = int(length) + offset if length is not None else resource.size
            received = offset
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=resource.name, disable=not progress, leave=False,
            ) as bar:
                for chunk in resp.iter_content(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        kept = (f"What arrived ({received} bytes) is kept in {part}; run the download again to "
                f"resume." if part.exists() else
                "Check the address and your connection, then run the download again.")
        raise DownloadError(
            f"{resource.name}: download from {resource.url} failed "
            f"({type(err).__name__}: {err}). {kept}"
        ) from err
    if total is not None and received < total:
        raise DownloadError(
            f"{resource.name}: the transfer was cut off at {received} of {total} bytes. What "
            f"arrived is kept in {part}; run the download again to resume."
        )


def _resumes_at(resp: requests.Response, offset: int) -> bool:
    """Whether a response is a partial answer that starts exactly at ``offset``."""
    if resp.status_code != 206:
        return False
    content_range = resp.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return start == offset
