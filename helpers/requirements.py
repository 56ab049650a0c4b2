"""The book's requirements for one kind of machine, read from pyproject.toml.

Run as a script (``python helpers/requirements.py [--gpu] [--extras test site]``), before the
book is installed: it needs only the standard library. ``--gpu`` lists every requirement except
``tensorflow-cpu`` plus the ``gpu`` extra (TensorFlow's CUDA build): the two builds are one
``tensorflow`` package and must never be installed together (see pyproject.toml). Used by
``make install GPU=1`` and by ``book/colab_setup.sh``.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(*, gpu: bool, extras: tuple[str, ...] = (),
                 pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement lines: the dependencies (without tensorflow-cpu when ``gpu``), then
    each of ``extras``, then the ``gpu`` extra when ``gpu``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise SystemExit(f"unknown extra {', '.join(unknown)}; pyproject.toml has "
                         f"{', '.join(optional)}")
    lines = [d for d in project["dependencies"] if not (gpu and d.startswith("tensorflow-cpu"))]
    for name in (*extras, *(("gpu",) if gpu else ())):
        lines += optional[name]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="TensorFlow's CUDA build instead of "
                                                           "tensorflow-cpu")
    parser.add_argument("--extras", nargs="*", default=[], help="optional extras to add")
    args = parser.parse_args(argv)
    print(*requirements(gpu=args.gpu, extras=tuple(args.extras)), sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
