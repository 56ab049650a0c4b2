"""Run the book: every chapter in order with papermill, in one named profile.

    python -m helpers.book --profile smoke            # the whole book (CI: a few minutes)
    python -m helpers.book --profile laptop --chapters 01 02

Executed notebooks go to ``book/executed/<profile>/``, each with a record beside it
(``<name>.json``: wall time, when, commit, and the fingerprint of what it ran). The book is
resumable, in the spirit of jupyter-cache: a chapter whose executed notebook and record exist
and whose fingerprint (its source, its parameters, the profile, the helpers' code) is unchanged
is skipped, so ``make book PROFILE=laptop`` can complete over several sittings; finished
training runs are reused by chapter 03 itself. ``--force`` runs everything again. At the end the
profile's results registry (``book/results/<profile>.json``, :mod:`helpers.results`) is collected
from the run folders and the README's tables for that profile are re-rendered. A chapter that
fails stops the run with the chapter's name and the failing cell, and the command exits
non-zero. The kernels run with ``SKINBOOK_SELFCHECK=strict``: an exercise's reference solution
that fails its own self-check (:mod:`helpers.selfcheck`) fails the chapter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import CHAPTERS, config
from helpers.resources import PeakMemory, directory_mb

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

    def record(self, profile: str) -> Path:
        """The JSON record written beside the executed notebook when it finishes."""
        return self.output(profile).with_suffix(".json")


def fingerprint(run: Run, profile: config.Profile) -> str:
    """A hash of what an execution depends on: the chapter's source, its parameters, the
    profile and the code of ``helpers/`` (data and finished run folders are checked by the
    chapters themselves)."""
    digest = hashlib.sha256()
    digest.update(CHAPTERS_DIR.joinpath(f"{CHAPTERS[run.chapter]}.py").read_bytes())
    digest.update(json.dumps(run.parameters, sort_keys=True).encode())
    digest.update(repr(profile).encode())
    for path in sorted((config.REPO_ROOT / "helpers").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def is_current(run: Run, profile: config.Profile) -> bool:
    """Whether ``run`` finished before with the same fingerprint (then it can be skipped)."""
    record = run.record(profile.name)
    if not (record.exists() and run.output(profile.name).exists()):
        return False
    return json.loads(record.read_text()).get("fingerprint") == fingerprint(run, profile)


def write_record(run: Run, profile: config.Profile, wall_time_s: float,
                 peak_memory_mb: float | None = None, *, fingerprint_before: str) -> Path:
    """The record of a finished run: the fingerprint of what it ran (``fingerprint_before``,
    taken before the execution started, so a chapter or helper edited while a long chapter
    ran does not count as executed), wall time, peak memory (runner plus kernel), the size of
    the profile's run folders afterwards, and where it ran."""
    from helpers.run_folders import provenance

    record = run.record(profile.name)
    record.write_text(json.dumps({
        "chapter": run_label(run), "fingerprint": fingerprint_before,
        "wall_time_s": round(wall_time_s, 1), "peak_memory_mb": peak_memory_mb,
        "runs_disk_mb": directory_mb(config.runs_root(profile.name)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{k: v for k, v in provenance().items() if k in ("commit", "cpu", "cores")},
    }, indent=2))
    return record


def plan(profile: config.Profile, chapters: list[str] | None = None, *,
         data_root: str | Path | None = None) -> list[Run]:
    """The runs that make up the book for ``profile``, in reading order.

    melanoma10k is optional (it needs Kaggle credentials): when it is not found in the data root
    (``data_root``, else ``$SKINBOOK_DATA``, else ``data/``), chapter 03's melanoma10k runs are
    left out with a printed note; chapters 01, 02, 04 and 05 skip their melanoma10k
    sections themselves, and chapters 06-08 use HAM10000 runs only.
    """
    selected = chapters or list(CHAPTERS)
    unknown = [c for c in selected if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; the book has {', '.join(CHAPTERS)}")
    runs: list[Run] = []
    for c in selected:
        if c == "03":  # one run per (task, backbone): transfer learning is per backbone
            tasks = [("ham10000", profile.backbones)]
            if _dataset_found("melanoma10k", data_root):
                tasks.append(("melanoma10k", profile.melanoma_backbones))
            elif profile.melanoma_backbones:
                print(f"melanoma10k not found in {config.data_root(data_root)}: chapter 03's "
                      f"{len(profile.melanoma_backbones)} melanoma10k run(s) are skipped (it is "
                      f"optional and needs Kaggle credentials; see data/README.md).")
            for task, names in tasks:
                runs += [Run(chapter=c, suffix=f"{task}__{b}",
                             parameters={"profile": profile.name, "task": task, "backbone": b})
                         for b in names]
        else:
            runs.append(Run(chapter=c, parameters={"profile": profile.name}))
    return runs


def _dataset_found(name: str, data_root: str | Path | None = None) -> bool:
    from helpers import datasets

    try:
        datasets.locate(name, config.data_root(data_root))
    except datasets.DatasetNotFoundError:
        return False
    return True


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the message names the chapter and the failing cell."""


def execute(run: Run, profile: str, cell_timeout_s: int | None = None) -> Path:
    """Execute one run with papermill and return the executed notebook's path; a cell running
    longer than ``cell_timeout_s`` (the profile's ``cell_timeout_s``) fails the chapter."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from helpers.interactive import headless_kernels
    from helpers.selfcheck import STRICT_ENV

    out = run.output(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits them: no widget controls, and solutions must pass their self-checks
    try:
        with headless_kernels({STRICT_ENV: "strict"}):
            papermill.execute_notebook(
                str(run.notebook), str(out), parameters=run.parameters, kernel_name="python3",
                cwd=str(CHAPTERS_DIR), progress_bar=False, request_save_on_cell_execute=False,
                execution_timeout=cell_timeout_s,
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
    parser.add_argument("--force", action="store_true",
                        help="run chapters again even if their executed copy is current")
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
        if not args.force and is_current(run, profile):
            print(f"[{i}/{len(runs)}] {label}: unchanged since its last execution, skipped "
                  f"({run.output(profile.name).relative_to(config.REPO_ROOT)})", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {label} ...", flush=True)
        run.record(profile.name).unlink(missing_ok=True)  # a record only for a finished run
        before = fingerprint(run, profile)
        try:
            with PeakMemory() as peak:
                out = execute(run, profile.name, profile.cell_timeout_s)
        except ChapterFailed as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        write_record(run, profile, time.perf_counter() - tick, peak.mb, fingerprint_before=before)
        print(f"    done in {time.perf_counter() - tick:.0f} s, peak memory {peak.mb / 1024:.1f} GiB "
              f"-> {out.relative_to(config.REPO_ROOT)}")
    print(f"Book ran in {time.perf_counter() - start:.0f} s.")
    update_results(profile.name)
    return 0


def update_results(profile: str) -> None:
    """Collect the profile's run folders into its results registry (and re-render the README's
    blocks that show this profile), so a finished book always leaves its numbers behind.

    A run or derived model of which this machine has no folder (melanoma10k is optional, or a
    run was trained on another machine) keeps its entry from the registry, listed under
    ``kept``, and so do the recorded times of chapters not executed here, instead of silently
    dropping out when one chapter is run on a machine that has only part of the runs."""
    from helpers import results

    earlier = results.load(profile) if results.registry_path(profile).exists() else None
    registry = results.collect(profile, keep_missing=earlier)
    if not registry["runs"]:
        return
    print(f"results registry: {results.write(registry)}")
    readme = config.REPO_ROOT / "README.md"
    text = readme.read_text()
    if f"<!-- results:{profile}:" in text:
        readme.write_text(results.render_blocks(text, {profile: registry}))
        print(f"README.md tables re-rendered from the {profile} registry")


if __name__ == "__main__":
    raise SystemExit(main())
