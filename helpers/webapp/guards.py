"""HTTP hygiene for the web app: security headers, host and origin checks, safe file names, and
one structured log line per request."""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Host names served by default: this machine only."""
MAX_FILENAME = 80
"""Longest file name echoed back (longer ones keep their start and their extension)."""

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
"""Only this server's own script and style; images from data: (results) and blob: (preview)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make form posts say Origin: null
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

log = logging.getLogger("helpers.webapp.requests")


def host_name(host: str) -> str:
    """``Host`` header value without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Is the request's ``Host`` one of ``allowed`` (``*`` allows any)?"""
    allowed = {host_name(name) for name in allowed}
    return "*" in allowed or host_name(host) in allowed


def cross_site(headers, host: str) -> bool:
    """Does a browser say this request comes from another site's page?

    Current browsers send ``Sec-Fetch-Site`` with every request, older ones ``Origin`` with
    every form POST ("null" when they hide it); scripts such as curl send neither and are not
    affected.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc.lower() != host.lower()


def clean_filename(name: str) -> str:
    """The base name of an uploaded file, without control characters, at most MAX_FILENAME."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip() or "upload"
    if len(name) <= MAX_FILENAME:
        return name
    stem, dot, ext = name.rpartition(".")
    ext = dot + ext if stem and len(ext) <= 8 else ""
    return name[:MAX_FILENAME - len(ext) - 1] + "\u2026" + ext


class RequestLog:
    """WSGI middleware: one JSON log line per request (status, latency, sizes; never the body)."""

    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status = []

        def recording_start(code, headers, exc_info=None):
            status.append(int(code.split(" ", 1)[0]))
            return start_response(code, headers, exc_info)

        body = self.app(environ, recording_start)
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()
            log.info(json.dumps({
                "method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                "status": status[-1] if status else None,
                "ms": round(1000 * (time.perf_counter() - started), 1),
                "in_bytes": int(environ.get("CONTENT_LENGTH") or 0), "out_bytes": sent}))
