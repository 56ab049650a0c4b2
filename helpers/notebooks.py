"""Keep ``chapters/*.ipynb`` generated from their ``.py`` (py:percent) sources.

    python -m helpers.notebooks sync    # regenerate every .ipynb from its .py
    python -m helpers.notebooks check   # exit 1 if any .ipynb differs from what sync would write

Generation goes one way only (``.py`` -> ``.ipynb``): jupytext's own pairing picks a direction
by modification time, which a git checkout scrambles. Generated notebooks carry no outputs,
execution counts or volatile metadata, so their diffs stay readable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

from helpers.config import REPO_ROOT

CHAPTERS_DIR = REPO_ROOT / "chapters"


def render(source: Path) -> str:
    """The notebook JSON generated from one py:percent chapter source."""
    notebook = jupytext.read(source, fmt="py:percent")
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    return nbformat.writes(notebook) + "\n"


def sources(folder: Path = CHAPTERS_DIR) -> list[Path]:
    """Every chapter source (``NN_name.py``) in ``folder``, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py"))


def sync(folder: Path = CHAPTERS_DIR) -> list[Path]:
    """Write each ``.ipynb`` from its ``.py``; return the notebooks that changed."""
    changed = []
    for source in sources(folder):
        target = source.with_suffix(".ipynb")
        text = render(source)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(target)
    return changed


def out_of_sync(folder: Path = CHAPTERS_DIR) -> list[str]:
    """Problems that ``sync`` would fix, or a notebook with no source: one line each."""
    problems = []
    for source in sources(folder):
        target = source.with_suffix(".ipynb")
        if not target.exists():
            problems.append(f"{target.name} is missing")
        elif target.read_text(encoding="utf-8") != render(source):
            problems.append(f"{target.name} differs from {source.name}")
    names = {s.stem for s in sources(folder)}
    problems += [f"{nb.name} has no .py source" for nb in folder.glob("*.ipynb")
                 if nb.stem not in names]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks")
    parser.add_argument("command", choices=["sync", "check"])
    args = parser.parse_args(argv)
    if args.command == "sync":
        for path in sync():
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    problems = out_of_sync()
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("Run `make notebooks` and commit the result.", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
