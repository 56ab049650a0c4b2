"""Publish an executed profile of the book into the repository, readable without running it.

    python -m helpers.publish --profile laptop     # book/executed/laptop -> book/published/laptop

The laptop book takes hours on a 2-core CPU, so its executed chapters are committed: a reader
who clones the repository sees the real outputs and figures, and ``make site PROFILE=laptop``
builds the website from them. Each published notebook is a cleaned copy:

- a first cell states the profile, the commit it ran from, when, on which CPU and in how long
  (from the book runner's record), and warns when that commit is older than the checkout's;
- outputs keep text, tables and figures; figures are re-encoded as JPEG at most 900 pixels
  wide, widget state and TensorFlow log noise are dropped, so the folder stays small.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import nbformat

from helpers import config

PUBLISHED_DIR = config.REPO_ROOT / "book" / "published"
MAX_WIDTH = 900
JPEG_QUALITY = 70


def compress_png(data: str) -> str:
    """A base64 PNG as a base64 JPEG, at most :data:`MAX_WIDTH` pixels wide (white background)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    image = image.convert("RGB")
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)),
                             Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def head_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=config.REPO_ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance_cell(record: dict, profile: str, current: str) -> nbformat.NotebookNode:
    """The first cell of a published notebook: where and when it ran."""
    wall = record.get("wall_time_s")
    made = record.get("commit", "unknown")
    text = (f"**Executed copy, profile `{profile}`.** Ran on {record.get('finished', '?')} from "
            f"commit `{made}` on {record.get('cpu', '?')} ({record.get('cores', '?')} cores) "
            f"in {wall / 60:.1f} minutes. Outputs are what that run printed; figures are "
            f"compressed copies.")
    if current and not made.startswith(current[:7]):
        text += (f"\n\n*This copy was made from commit `{made}`, not from this checkout's "
                 f"`{current}`: the code and text of the chapter may have changed since. "
                 f"Re-run it with `make book PROFILE={profile}`.*")
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["provenance"]})


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop widget state and log noise, compress figures (in place; returned for chaining)."""
    from helpers.site import strip_noise

    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text, _ = strip_noise(out.get("text", ""))
                if not text.strip():
                    continue
                out["text"] = text
            data = out.get("data", {})
            data.pop("application/vnd.jupyter.widget-view+json", None)
            if "image/png" in data:
                data["image/jpeg"] = compress_png(data.pop("image/png"))
            if out.get("output_type") in ("display_data", "execute_result") and not data:
                continue  # a widget with no static fallback: nothing to show
            outputs.append(out)
        cell.outputs = outputs
    return nb


def publish(profile: str, *, executed: Path | None = None, out: Path | None = None) -> list[Path]:
    """Publish every executed notebook of ``profile`` that has a runner record; the written
    paths. A notebook without a record (the run did not finish) is not published."""
    from helpers import book

    executed = Path(executed) if executed else book.EXECUTED_DIR / profile
    out = Path(out) if out else PUBLISHED_DIR / profile
    current = head_commit()
    written = []
    for notebook in sorted(executed.glob("*.ipynb")):
        record = notebook.with_suffix(".json")
        if not record.exists():
            print(f"skipped {notebook.name}: no runner record (the run did not finish)")
            continue
        data = json.loads(record.read_text())
        nb = clean(nbformat.read(notebook, as_version=4))
        nb.cells.insert(0, provenance_cell(data, profile, current))
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / notebook.name)
        (out / record.name).write_text(json.dumps(data, indent=2) + "\n")
        written.append(out / notebook.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.publish",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, choices=config.profile_names())
    args = parser.parse_args(argv)
    written = publish(args.profile)
    if not written:
        print(f"nothing to publish: run the book first (make book PROFILE={args.profile})",
              file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in written) / 1e6
    print(f"published {len(written)} notebook(s), {size:.1f} MB, in "
          f"{written[0].parent.relative_to(config.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
