"""Student copies: solutions removed, outputs cleared, and the copies still run to the exercises.

The execution test runs each real chapter's student copy with papermill in the smoke profile up
to and including its last exercise placeholder (the rest of the chapter is the book's own cells,
which the smoke book run executes), after a static check that no cell outside a solution uses a
name that only a solution defines.
"""

from __future__ import annotations

import jupytext
import nbformat
import pytest

import helpers
from helpers import notebooks, student

SOURCES = [s for s in notebooks.sources() if s.stem in helpers.CHAPTERS.values()]


def solutions_of(source):
    notebook = jupytext.read(source)
    return [cell.source for cell in notebook.cells if student.is_solution(cell)]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    keys = tmp_path_factory.mktemp("answer_key")
    assert student.main(["write", "--out", str(out), "--key-out", str(keys)]) == 0
    return out


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_chapter_exercises_are_well_formed(source):
    notebook = nbformat.reads(notebooks.render(source), as_version=4)
    problems = student.structure_problems(notebook)
    assert not problems, f"{source.name}: " + "; ".join(problems)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_student_copy_has_no_solution_and_no_output(source, copies):
    path = copies / f"{source.stem}.ipynb"
    assert path.exists(), f"no student copy named like the chapter: {path.name}"
    copy = nbformat.read(path, as_version=4)
    chapter = nbformat.reads(notebooks.render(source), as_version=4)
    sources = [cell.source for cell in copy.cells]
    for solution in solutions_of(source):
        assert solution.strip() not in sources, f"a solution survived in {path.name}"
    assert not any(student.is_solution(cell) for cell in copy.cells)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in copy.cells if cell.cell_type == "code")
    placeholders = [i for i, c in enumerate(copy.cells) if student.PLACEHOLDER_TAG in
                    c.metadata.get("tags", [])]
    exercises = [i for i, c in enumerate(copy.cells) if student.is_exercise(c)]
    assert [i + 1 for i in exercises] == placeholders, "one placeholder right after each exercise"
    # Everything else is the chapter, cell for cell (parameters cell included, for papermill).
    kept = [c.source for c in chapter.cells if not student.is_solution(c)]
    assert [c.source for i, c in enumerate(copy.cells) if i not in placeholders] == kept
    assert copy.cells[[i for i, c in enumerate(copy.cells)
                       if "parameters" in c.metadata.get("tags", [])][0]].source.strip()
    assert copy.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_answer_key_holds_every_exercise_with_its_solution_and_self_check(source):
    chapter = nbformat.reads(notebooks.render(source), as_version=4)
    key = student.answer_key(source)
    assert student.structure_problems(key) == []
    assert sum(map(student.is_exercise, key.cells)) == sum(map(student.is_exercise, chapter.cells))
    kept = [c.source for c in key.cells]
    for solution in solutions_of(source):
        assert solution in kept, f"a solution is missing from the key of {source.name}"
    checks = [c.source for c in chapter.cells if "selfcheck.check(" in c.source]
    assert all(c in kept for c in checks)
    code = [c for c in key.cells if c.cell_type == "code"]
    assert all(student.is_solution(c) or "selfcheck.check(" in c.source for c in code)
    copy = student.student_notebook(source)        # the self-checks stay in the student copy
    assert all(c in [cell.source for cell in copy.cells] for c in checks)


def test_answer_key_shows_the_executed_outputs(tmp_path):
    source = SOURCES[0]
    executed = nbformat.reads(notebooks.render(source), as_version=4)
    for cell in executed.cells:
        if student.is_solution(cell) and cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text=f"ran {len(cell.source)}\n")]
            cell.execution_count = 7
    path = tmp_path / "executed.ipynb"
    nbformat.write(executed, path)
    key = student.answer_key(source, path)
    solved = [c for c in key.cells if student.is_solution(c) and c.cell_type == "code"]
    assert solved and all(c.outputs and c.execution_count == 7 for c in solved)
    assert str(path) in key.cells[0].source and key.metadata["skinbook"]["answer_key"]


def test_structure_check_catches_a_missing_solution_and_a_stray_one():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Intro.\n\n**Exercise 1.** Compute something."),
        nbformat.v4.new_code_cell("x = 1"),                                  # not tagged
        nbformat.v4.new_code_cell("y = 2", metadata={"tags": ["solution"]}),  # no exercise
    ])
    problems = student.structure_problems(notebook)
    assert len(problems) == 2
    assert "cell 0: exercise not followed by a code cell tagged 'solution'" in problems[0]
    assert "cell 2: solution not preceded by an '**Exercise**' markdown cell" in problems[1]


def test_dependency_check_catches_a_cell_that_needs_a_solution():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import numpy as np\ntable = np.arange(3)"),
        nbformat.v4.new_markdown_cell("**Exercise** Double it."),
        nbformat.v4.new_code_cell("doubled = table * 2\ntable = table + 0",
                                  metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("%time print(table.sum())\nprint(doubled)"),
    ])
    problems = student.dependency_problems(notebook)
    assert len(problems) == 1 and "uses doubled" in problems[0], problems
    notebook.cells[3].source = "doubled = table * 3\nprint(doubled)"   # defined outside: fine
    assert student.dependency_problems(notebook) == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_student_copy_runs_up_to_its_last_exercise(source, copies, tmp_path):
    result = student.execute_student_copy(copies / f"{source.stem}.ipynb", "smoke", tmp_path)
    executed = nbformat.read(result.executed, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert len(code) >= result.cells_run and all(c.execution_count for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert student.PLACEHOLDER_TAG in executed.cells[-1].metadata.get("tags", [])
