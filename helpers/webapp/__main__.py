"""``python -m helpers.webapp --model PATH``: serve the web app (see :mod:`helpers.webapp`).

The app runs under waitress, a production WSGI server in pure Python: a fixed pool of worker
threads (``--threads``), a read timeout that drops connections idle for longer
(``--read-timeout``: an upload that stalls after its headers holds a connection, never a
thread, and only that long; idle keep-alive connections are closed after it too), and a cap on
open connections (``--connection-limit``; more wait to be accepted). Request bodies larger than
the upload limit are refused with 413 (from the Content-Length before reading, or as soon as a
chunked body passes it) and the rest are buffered in memory, never in a temporary file: at
worst connection limit x (upload limit + 1 MB), 0.7 GB with the defaults, while 64 uploads
arrive at once. ``--debug`` swaps in Werkzeug's development server, on this machine only.
Each request is logged as one JSON line on stdout: method, path, status, milliseconds, bytes in
and out (never the image).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from helpers import DISCLAIMER
from helpers.predict import ModelError

BODY_SLACK = 1024 * 1024
"""Room above the upload limit for the multipart envelope, so that the app itself answers
413 for a photo just over the limit (with its message), and waitress for anything beyond."""
RESPONSE_BUFFER = 16 * 1024 * 1024
"""Responses are buffered in memory up to this size (waitress would spool larger ones to disk:
a result page embeds the photo)."""
WILDCARDS = ("0.0.0.0", "::", "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from helpers.decoding import MAX_PIXELS
    from helpers.webapp import MAX_UPLOAD_MB
    from helpers.webapp.guards import LOCAL_HOSTS

    parser = argparse.ArgumentParser(
        prog="python -m helpers.webapp",
        description="Serve a page that classifies a skin-lesion photo (educational, not a "
                    "diagnosis).")
    parser.add_argument("--model", required=True, type=Path,
                        help="a run folder's model.keras, or an exported .tflite with its .json")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    parser.add_argument("--threads", type=int, default=4,
                        help="worker threads answering requests (default 4)")
    parser.add_argument("--read-timeout", type=float, default=15.0,
                        help="seconds a connection may stay silent before it is closed "
                             "(default 15)")
    parser.add_argument("--connection-limit", type=int, default=64,
                        help="most open connections; more wait to be accepted (default 64)")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                        help=f"upload limit in MB (default {MAX_UPLOAD_MB})")
    parser.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6,
                        help=f"largest photo in megapixels (default {MAX_PIXELS / 1e6:g})")
    parser.add_argument("--allowed-hosts", default=None,
                        help="comma-separated host names clients use to reach the server "
                             f"(default: {', '.join(LOCAL_HOSTS)} and --host; '*' = any)")
    parser.add_argument("--debug", action="store_true",
                        help="Werkzeug's development server instead of waitress (this machine "
                             "only)")
    args = parser.parse_args(argv)
    for name in ("threads", "connection_limit", "read_timeout", "max_upload_mb",
                 "max_megapixels"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.allowed_hosts is None:
        if args.host in WILDCARDS:
            parser.error(f"--host {args.host!r} listens on every interface: say which "
                         "names clients will use, e.g. --allowed-hosts "
                         "skin.example.org,192.168.1.20 (or '*' for any)")
        args.allowed_hosts = [*LOCAL_HOSTS, args.host]
    else:
        args.allowed_hosts = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    if args.debug and args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--debug serves with the development server, on 127.0.0.1 only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from helpers.webapp import create_app

    try:
        app = create_app(args.model, max_upload_mb=args.max_upload_mb,
                         max_pixels=int(args.max_megapixels * 1e6),
                         allowed_hosts=args.allowed_hosts)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    requests_log = logging.getLogger("helpers.webapp.requests")
    requests_log.addHandler(logging.StreamHandler(sys.stdout))
    requests_log.setLevel(logging.INFO)
    requests_log.propagate = False
    if args.debug:
        from werkzeug.serving import make_server

        server = make_server(args.host, args.port, app, threaded=True)
        host, port, how = args.host, server.server_port, "Werkzeug's development server (--debug)"
        run, stop = server.serve_forever, server.server_close
    else:
        from waitress import create_server

        body_limit = int(args.max_upload_mb * 1024 * 1024) + BODY_SLACK
        server = create_server(
            app, host=args.host, port=args.port, threads=args.threads,
            channel_timeout=args.read_timeout,
            cleanup_interval=max(1, round(args.read_timeout / 2)),
            connection_limit=args.connection_limit, max_request_body_size=body_limit,
            inbuf_overflow=body_limit + 1, outbuf_overflow=RESPONSE_BUFFER, ident="skinbook")
        host, port = getattr(server, "effective_listen", [(server.effective_host,
                                                           server.effective_port)])[0]
        how = (f"waitress ({args.threads} threads, {args.read_timeout:g} s read timeout, "
               f"{args.connection_limit} connections)")
        run, stop = server.run, server.close
    host = f"[{host}]" if ":" in host else host
    print(f"Serving {args.model} on http://{host}:{port}/ with {how}  (Ctrl+C stops)",
          flush=True)
    print(DISCLAIMER, flush=True)
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
