"""The widgets: a static figure first, then controls only where a person can move them.

Executed for real with papermill: inside ``interactive.headless_kernels`` (how the book runner
and the student check start their kernels) a cell shows the figure and no widget; outside it
the same cell also shows the live control.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import papermill

from helpers import interactive

REPO = Path(__file__).resolve().parents[1]
CELL = """\
import numpy as np
from helpers import interactive
interactive.threshold_explorer(np.array([True, False, True, False, True, False]),
                               np.array([0.9, 0.2, 0.6, 0.4, 0.3, 0.1]), threshold=0.5,
                               positive="melanoma")
"""
WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(tmp_path: Path, name: str) -> list[dict]:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    source, out = tmp_path / f"{name}.ipynb", tmp_path / f"{name}.out.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(str(source), str(out), kernel_name="python3", cwd=str(REPO),
                               progress_bar=False, execution_timeout=300)
    return nbformat.read(out, as_version=4).cells[0].outputs


def test_a_headless_kernel_shows_the_figure_without_controls_a_live_one_adds_them(
        tmp_path, monkeypatch):
    monkeypatch.delenv(interactive.HEADLESS_ENV, raising=False)
    live = _outputs(tmp_path, "live")
    with interactive.headless_kernels({"SKINBOOK_TEST_EXTRA": "yes"}):
        assert os.environ[interactive.HEADLESS_ENV] == "1"
        assert os.environ["SKINBOOK_TEST_EXTRA"] == "yes"
        headless = _outputs(tmp_path, "headless")
    assert interactive.HEADLESS_ENV not in os.environ and "SKINBOOK_TEST_EXTRA" not in os.environ

    def kinds(outputs):
        return [mime for o in outputs for mime in o.get("data", {})]

    assert "image/png" in kinds(live) and "image/png" in kinds(headless)  # the static figure
    assert WIDGET in kinds(live), kinds(live)
    assert WIDGET not in kinds(headless), kinds(headless)
    assert not [o for o in headless if o.output_type in ("error", "stream")
                and getattr(o, "name", "") == "stderr"], headless
