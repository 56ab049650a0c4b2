"""Chapters: sources and generated notebooks in sync, each runnable by papermill."""

from __future__ import annotations

import jupytext
import pytest

import helpers
from helpers import notebooks

SOURCES = notebooks.sources()


def test_every_registered_chapter_has_a_source():
    names = {source.stem for source in SOURCES}
    missing = [name for name in helpers.CHAPTERS.values() if name not in names]
    assert not missing, f"chapters listed in helpers.CHAPTERS without a .py source: {missing}"
    unlisted = names - set(helpers.CHAPTERS.values())
    assert not unlisted, f"chapter sources not listed in helpers.CHAPTERS: {sorted(unlisted)}"


def test_notebooks_are_in_sync_with_their_sources():
    problems = notebooks.out_of_sync()
    assert not problems, "run `make notebooks` and commit: " + "; ".join(problems)


def test_sync_detects_an_edited_source(tmp_path):
    source = tmp_path / "01_demo.py"
    source.write_text(SOURCES[0].read_text(encoding="utf-8"), encoding="utf-8")
    assert notebooks.out_of_sync(tmp_path) == ["01_demo.ipynb is missing"]
    assert notebooks.sync(tmp_path) == [tmp_path / "01_demo.ipynb"]
    assert notebooks.out_of_sync(tmp_path) == []
    source.write_text(source.read_text(encoding="utf-8") + "\n# %%\nprint('new cell')\n",
                      encoding="utf-8")
    assert notebooks.out_of_sync(tmp_path) == ["01_demo.ipynb differs from 01_demo.py"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_chapter_has_kernelspec_parameters_and_setup(source):
    notebook = jupytext.read(source)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' is needed by papermill"
    assert 'profile = "smoke"' in tagged[0].source
    number = source.stem[:2]
    assert f'helpers.setup("{number}", profile' in source.read_text(encoding="utf-8")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_generated_notebook_has_no_outputs(source):
    notebook = jupytext.read(source.with_suffix(".ipynb"))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
