"""Run the book: every chapter in order with papermill, in one named profile.

    python -m helpers.book --profile smoke            # the whole book (CI: a few minutes)
    python -m helpers.book --profile laptop --chapters 01 02

Executed notebooks go to ``book/executed/<profile>/``. A chapter that fails stops the run with
the chapter's name and the failing cell, and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import CHAPTERS, config

CHAPTERS_DIR = config.REPO_ROOT / "chapters"
EXECUTED_DIR = config.REPO_ROOT / "book" / "executed"


@dataclass(frozen=True)
class Run:
    """One execution of one chapter notebook with its parameters."""

    chapter: str
    parameters: dict = field(default_factory=dict)
    suffix: str = ""

    @property
    def notebook(self) -> Path:
        return CHAPTERS_DIR / f"{CHAPTERS[self.chapter]}.ipynb"

    def output(self, profile: str) -> Path:
        name = CHAPTERS[self.chapter] + (f"__{self.suffix}" if self.suffix else "")
        return EXECUTED_DIR / profile / f"{name}.ipynb"


def plan(profile: config.Profile, chapters: list[str] | None = None) -> list[Run]:
    """The runs that make up the book for ``profile``, in reading order."""
    selected = chapters or list(CHAPTERS)
    unknown = [c for c in selected if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; the book has {', '.join(CHAPTERS)}")
    runs: list[Run] = []
    for c in selected:
        if c == "03":  # one run per (task, backbone): transfer learning is per backbone
            for task, names in (("ham10000", profile.backbones),
                                ("melanoma10k", profile.melanoma_backbones)):
                runs += [Run(chapter=c, suffix=f"{task}__{b}",
                             parameters={"profile": profile.name, "task": task, "backbone": b})
                         for b in names]
        else:
            runs.append(Run(chapter=c, parameters={"profile": profile.name}))
    return runs


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the message names the chapter and the failing cell."""


def execute(run: Run, profile: str) -> Path:
    """Execute one run with papermill and return the executed notebook's path."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    out = run.output(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(run.notebook), str(out), parameters=run.parameters, kernel_name="python3",
            cwd=str(CHAPTERS_DIR), progress_bar=False, request_save_on_cell_execute=False,
        )
    except PapermillExecutionError as err:
        source = err.source.strip().splitlines()
        first = source[0] if source else ""
        raise ChapterFailed(
            f"Chapter {run_label(run)} failed in cell {err.exec_count} (`{first}`): "
            f"{err.ename}: {err.evalue}\nThe partly executed notebook is {out}."
        ) from None
    except (DeadKernelError, CellTimeoutError) as err:  # e.g. the kernel ran out of memory
        raise ChapterFailed(
            f"Chapter {run_label(run)} stopped: {type(err).__name__}: {err}\n"
            f"The partly executed notebook is {out}."
        ) from None
    return out


def run_label(run: Run) -> str:
    """The chapter's notebook name, with the run's suffix (e.g. task and backbone) if any."""
    return CHAPTERS[run.chapter] + (f" ({run.suffix})" if run.suffix else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke", choices=config.profile_names(),
                        help="run profile from book/profiles.yml (default: smoke)")
    parser.add_argument("--chapters", nargs="+", metavar="NN",
                        help="chapter numbers to run (default: all, in order)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    profile = config.load_profile(args.profile)
    runs = plan(profile, args.chapters)
    print(f"Running {len(runs)} notebook(s) in profile {profile.name!r}; "
          f"data from {config.data_root()}")
    start = time.perf_counter()
    for i, run in enumerate(runs, 1):
        tick = time.perf_counter()
        label = run_label(run)
        print(f"[{i}/{len(runs)}] {label} ...", flush=True)
        try:
            out = execute(run, profile.name)
        except ChapterFailed as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        print(f"    done in {time.perf_counter() - tick:.0f} s -> {out.relative_to(config.REPO_ROOT)}")
    print(f"Book ran in {time.perf_counter() - start:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
