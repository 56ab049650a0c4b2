"""``python -m helpers.webapp --model PATH``: serve the web app (see :mod:`helpers.webapp`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers import DISCLAIMER
from helpers.predict import ModelError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.webapp",
        description="Serve a page that classifies an uploaded skin-lesion photo "
                    "(educational, not a diagnosis).")
    parser.add_argument("--model", required=True, type=Path,
                        help="a run folder's model.keras, or an exported .tflite with its .json")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="upload limit in MB")
    args = parser.parse_args(argv)

    from werkzeug.serving import make_server

    from helpers.webapp import create_app

    try:
        app = create_app(args.model, max_upload_mb=args.max_upload_mb)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"Serving {args.model} on http://{args.host}:{server.server_port}/  (Ctrl+C stops)",
          flush=True)
    print(DISCLAIMER, flush=True)
    print("This is Werkzeug's development server: put a production WSGI server (waitress, "
          "gunicorn) in front of it before exposing it beyond your machine.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
