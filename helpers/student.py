"""Student copies of the chapters: exercises kept, solutions removed, outputs cleared.

    python -m helpers.student write                  # book/student/NN_topic.ipynb (make student)
                                                     # and the teacher's key in book/answer_key/
    python -m helpers.student check --profile smoke  # write to a temporary folder and execute them

How a chapter marks an exercise (see notes/CONVENTIONS.md): a markdown cell with a paragraph
starting with ``**Exercise`` (``**Exercise**`` or ``**Exercise 2.**``), followed by its solution in one or more code cells tagged ``solution``
(``# %% tags=["solution"]``). The student copy replaces each solution with one empty
placeholder cell tagged ``exercise`` and has no outputs. Copies are generated from the ``.py``
sources, never from the (possibly stale) ``.ipynb``, and keep the chapter's file names. The
self-check cell after each exercise (:mod:`helpers.selfcheck`) stays in the copy: it tells the
learner whether the answer is right without showing it. Written answers to "why" questions are
markdown cells tagged ``solution`` and are removed with the code.

The **answer key** (``book/answer_key/NN_topic.ipynb``, beside ``book/student/``; hand it to
teachers, not learners) holds every exercise with its solution cells, written answers and
self-check, with the outputs of the chapter as the book runner executed it in a profile
(``--profile``; without an executed copy the key has no outputs and says so).

What ``check`` proves, cheaply:

* **structure**: every exercise has a solution right after it, every solution follows an
  exercise, and every chapter has at least one exercise;
* **no hidden dependency**: no later cell of the student copy uses a name that only a solution
  defines (the student would hit a ``NameError``), found statically;
* **it runs**: each student copy is executed with papermill in the given profile up to and
  including its last exercise placeholder (placeholders run as no-ops); the cells after the
  last exercise are the chapter's own cells, which the book run already executes.
"""

from __future__ import annotations

import argparse
import ast
import copy
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from helpers import config, notebooks

STUDENT_DIR = config.REPO_ROOT / "book" / "student"
ANSWER_KEY_DIR = config.REPO_ROOT / "book" / "answer_key"
EXERCISE_MARK = "**Exercise"
SOLUTION_TAG = "solution"
PLACEHOLDER_TAG = "exercise"
PLACEHOLDER = "# Your solution to the exercise above goes here.\n"


class StudentCopyError(RuntimeError):
    """A chapter's exercises are malformed, or its student copy does not run."""


def is_exercise(cell) -> bool:
    """A markdown cell with a paragraph that starts with ``**Exercise`` (usually its start)."""
    return cell.cell_type == "markdown" and any(
        line.lstrip().startswith(EXERCISE_MARK) for line in cell.source.splitlines())


def is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.metadata.get("tags", [])


def structure_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Exercises without a solution right after them, solutions without an exercise before."""
    problems = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if is_exercise(cell):
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or not is_solution(nxt) or nxt.cell_type != "code":
                problems.append(f"cell {i}: exercise not followed by a code cell tagged "
                                f"'{SOLUTION_TAG}' (`{_first_line(cell)}`)")
        if is_solution(cell):
            prev = cells[i - 1] if i > 0 else None
            if prev is None or not (is_exercise(prev) or is_solution(prev)):
                problems.append(f"cell {i}: solution not preceded by an '**Exercise**' markdown "
                                f"cell (`{_first_line(cell)}`)")
    if not any(is_exercise(c) for c in cells):
        problems.append("no exercise (a markdown cell starting with '**Exercise**')")
    return problems


def _first_line(cell) -> str:
    lines = cell.source.strip().splitlines()
    return lines[0][:70] if lines else ""


def _python(source: str) -> ast.Module | None:
    """Parse a code cell (IPython magics turned into Python first); None if it does not parse."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython missing or odd input: try the raw source
        pass
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _bound(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _loaded(tree: ast.Module) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def dependency_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Cells outside solutions that use a name only a solution defines (a NameError for students)."""
    problems, from_solutions, from_chapter = [], {}, set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = _python(cell.source)
        if tree is None:
            continue
        if is_solution(cell):
            for name in _bound(tree) - from_chapter:
                from_solutions.setdefault(name, i)
            continue
        bound_here = _bound(tree)
        missing = sorted(n for n in _loaded(tree) & set(from_solutions)
                         if n not in from_chapter and n not in bound_here)
        if missing:
            problems.append(f"cell {i} (`{_first_line(cell)}`) uses {', '.join(missing)}, defined "
                            f"only in the solution cell {from_solutions[missing[0]]}; students "
                            f"get a NameError. Define it outside the solution.")
        from_chapter |= bound_here
    return problems


def student_notebook(source: Path) -> nbformat.NotebookNode:
    """The student copy of one chapter source (``chapters/NN_topic.py``)."""
    nb = nbformat.reads(notebooks.render(source), as_version=4)
    cells = []
    for cell in nb.cells:
        if not is_solution(cell):
            cells.append(cell)
            continue
        if cells and PLACEHOLDER_TAG in cells[-1].metadata.get("tags", []):
            continue                                   # one placeholder per exercise
        placeholder = nbformat.v4.new_code_cell(PLACEHOLDER)
        placeholder.id = cell.id
        placeholder.metadata["tags"] = [PLACEHOLDER_TAG]
        cells.append(placeholder)
    nb.cells = cells
    nb.metadata["skinbook"] = {"student_copy": True, "source": f"chapters/{source.name}"}
    return nb


def write(out: Path = STUDENT_DIR, sources: list[Path] | None = None) -> list[Path]:
    """Write a student copy of every chapter into ``out`` (same names); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources or notebooks.sources():
        nb = nbformat.reads(notebooks.render(source), as_version=4)
        problems = structure_problems(nb)
        if problems:
            raise StudentCopyError(f"{source.name}: " + "; ".join(problems))
        path = out / f"{source.stem}.ipynb"
        nbformat.write(student_notebook(source), path)
        written.append(path)
    return written


def executed_copy(source: Path, profile: str) -> Path | None:
    """The book runner's executed copy of a chapter in ``profile``, if it ran; for a chapter run
    once per backbone, the run whose exercises execute (``ham10000`` with the profile's
    ``pretraining_backbone``)."""
    from helpers import book

    prof = config.load_profile(profile)
    runs = book.plan(prof, [source.name[:2]]) if source.name[:2] in book.CHAPTERS else []
    runs = sorted(runs, key=lambda r: r.suffix not in ("", f"ham10000__{prof.pretraining_backbone}"))
    return next((r.output(profile) for r in runs if r.output(profile).exists()), None)


def answer_key(source: Path, executed: Path | None = None) -> nbformat.NotebookNode:
    """The teacher's key of one chapter: every exercise with its solution cells (code and
    written answers) and its self-check, with the outputs of ``executed`` where it has them."""
    nb = nbformat.reads(notebooks.render(source), as_version=4)
    ran = {}
    if executed is not None:
        for cell in nbformat.read(executed, as_version=4).cells:
            if cell.cell_type == "code":
                ran.setdefault(cell.source, cell)
    title = next(c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown")
    origin = (f"outputs from `{executed.relative_to(config.REPO_ROOT)}`"
              if executed is not None and executed.is_relative_to(config.REPO_ROOT) else
              f"outputs from `{executed}`" if executed is not None else
              "no outputs: run the book (python -m helpers.book) and write the key again")
    cells = [nbformat.v4.new_markdown_cell(
        f"{title}: answer key\n\nFor teachers: every exercise of `chapters/{source.name}` with "
        f"its solution, written answers and self-check ({origin}). The student copy in "
        f"`book/student/` has the exercises without the solutions.")]
    keep = False
    for cell in nb.cells:
        if is_exercise(cell):
            text = cell.source.split("\n\n")
            start = next(i for i, part in enumerate(text) if EXERCISE_MARK in part)
            cells.append(nbformat.v4.new_markdown_cell("\n\n".join(text[start:])))
            keep = True
        elif keep and (is_solution(cell) or "selfcheck.check(" in cell.source):
            cells.append(copy.deepcopy(cell))
        else:
            keep = False
    for cell in cells:
        if cell.cell_type == "code" and cell.source in ran:
            cell.outputs = copy.deepcopy(ran[cell.source].get("outputs", []))
            cell.execution_count = ran[cell.source].get("execution_count")
    key = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(nb.metadata))
    key.metadata["skinbook"] = {"answer_key": True, "source": f"chapters/{source.name}",
                                "outputs_from": str(executed) if executed else None}
    return key


def write_answer_keys(out: Path = ANSWER_KEY_DIR, profile: str = "smoke",
                      sources: list[Path] | None = None) -> list[Path]:
    """Write the answer key of every chapter into ``out`` (same names); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources or notebooks.sources():
        path = out / f"{source.stem}.ipynb"
        nbformat.write(answer_key(source, executed_copy(source, profile)), path)
        written.append(path)
    return written


@dataclass(frozen=True)
class CheckResult:
    notebook: Path
    executed: Path | None
    cells_run: int
    cells_total: int


def truncate_after_last_exercise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` that ends with its last exercise placeholder."""
    last = max((i for i, c in enumerate(nb.cells) if PLACEHOLDER_TAG in c.metadata.get("tags", [])),
               default=None)
    if last is None:
        raise StudentCopyError("the student copy has no exercise placeholder")
    nb = copy.deepcopy(nb)
    nb.cells = nb.cells[: last + 1]
    return nb


def execute_student_copy(path: Path, profile: str, workdir: Path) -> CheckResult:
    """Execute one student copy with papermill up to its last exercise placeholder."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from helpers.interactive import headless_kernels

    nb = nbformat.read(path, as_version=4)
    problems = dependency_problems(nb)
    if problems:
        raise StudentCopyError(f"{path.name}: " + " ".join(problems))
    short = truncate_after_last_exercise(nb)
    runnable = workdir / f"{path.stem}.upto_exercises.ipynb"
    executed = workdir / f"{path.stem}.executed.ipynb"
    nbformat.write(short, runnable)
    try:
        with headless_kernels():  # figures without widget controls, as in the book run
            papermill.execute_notebook(
                str(runnable), str(executed), parameters={"profile": profile},
                kernel_name="python3", cwd=str(notebooks.CHAPTERS_DIR), progress_bar=False,
                request_save_on_cell_execute=False,
            )
    except PapermillExecutionError as err:
        source = err.source.strip().splitlines()
        raise StudentCopyError(
            f"student copy {path.name} fails in cell {err.exec_count} "
            f"(`{source[0] if source else ''}`) before its last exercise: {err.ename}: "
            f"{err.evalue}. Executed copy: {executed}"
        ) from None
    ran = sum(1 for c in short.cells if c.cell_type == "code")
    total = sum(1 for c in nb.cells if c.cell_type == "code")
    return CheckResult(path, executed, ran, total)


def check(profile: str = "smoke", workdir: Path | None = None,
          sources: list[Path] | None = None) -> list[CheckResult]:
    """Write student copies into ``workdir`` and execute each up to its last exercise."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="skinbook-student-"))
    results = []
    for path in write(workdir / "student", sources):
        results.append(execute_student_copy(path, profile, workdir))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.student",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write student copies (default: book/student/) and the "
                                      "teacher's answer key (default: book/answer_key/)")
    w.add_argument("--out", type=Path, default=STUDENT_DIR)
    w.add_argument("--key-out", type=Path, default=ANSWER_KEY_DIR)
    w.add_argument("--profile", default="smoke", choices=config.profile_names(),
                   help="the executed book whose outputs go into the answer key")
    c = sub.add_parser("check", help="write student copies to a temporary folder and run them "
                                     "up to their last exercise")
    c.add_argument("--profile", default="smoke", choices=config.profile_names())
    c.add_argument("--workdir", type=Path, help="where copies and executed copies go "
                                                "(default: a new temporary folder)")
    c.add_argument("--chapters", nargs="+", metavar="NN", help="only these chapter numbers")
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            for path in write(args.out) + write_answer_keys(args.key_out, args.profile):
                print(f"wrote {path.relative_to(config.REPO_ROOT) if path.is_relative_to(config.REPO_ROOT) else path}")
            return 0
        sources = notebooks.sources()
        if args.chapters:
            sources = [s for s in sources if s.name[:2] in args.chapters]
        for result in check(args.profile, args.workdir, sources):
            print(f"ok {result.notebook.name}: ran {result.cells_run} of {result.cells_total} "
                  f"code cells (up to the last exercise) -> {result.executed}")
    except StudentCopyError as err:
        print(f"STUDENT COPY FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
