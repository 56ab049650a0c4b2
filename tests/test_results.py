"""The results registry (helpers.results): honest numbers, rendered, never typed.

- The README's generated blocks are exactly what the committed registry renders.
- No metric-like number (three decimals) is typed into README or chapter prose outside them.
- Every choice in the registry is reproduced from validation metrics alone, and does not move
  when the test scores do.
(That a registry entry's numbers are those of its run folder's predictions is tested with a
real run in tests/test_training.py.)
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import results

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_OR_CONSTANT = {
    "0.885",  # ISIC 2018 winner's balanced accuracy (chapter 04 reference, cited)
    "0.685",  # published lesion-grouped HAM10000 result (chapter 04, cited)
    "0.143",  # chance balanced accuracy with 7 classes, 1/7
    "0.999",  # Keras' default batch-norm momentum for MobileNetV2 (chapter 03)
    "0.485", "0.456", "0.406", "0.229", "0.224", "0.225",  # ImageNet mean and std
}
"""Three-decimal numbers allowed in prose: published references and constants, not our runs."""


@pytest.fixture(scope="module")
def laptop() -> dict:
    return results.load("laptop")


def _without_blocks(text: str) -> str:
    return results.BLOCK.sub("", text)


def test_readme_blocks_are_rendered_from_the_registry(laptop):
    readme = (REPO / "README.md").read_text()
    blocks = list(results.BLOCK.finditer(readme))
    assert {m["what"] for m in blocks} == {"headline", "configs", "runs", "derived", "resources",
                                               "provenance"}
    assert results.render_blocks(readme, {"laptop": laptop}) == readme, (
        "README.md disagrees with book/results/laptop.json: run "
        "`make results PROFILE=laptop` (python -m helpers.results --profile laptop --render)")


def _markdown_prose(path: Path) -> str:
    """The markdown cells of a py:percent chapter (comment lines after a markdown marker)."""
    prose, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            inside = "[markdown]" in line
        elif inside and line.startswith("#"):
            prose.append(line[1:])
    return "\n".join(prose)


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "chapters").glob("*.py"))],
                         ids=lambda p: p.name)
def test_no_metric_is_typed_by_hand(path):
    text = path.read_text() if path.suffix == ".md" else _markdown_prose(path)
    typed = set(re.findall(r"(?<![\d.])0\.\d{3}(?!\d)", _without_blocks(text)))
    assert not typed - PUBLISHED_OR_CONSTANT, (
        f"{path.name} types metric-like numbers {sorted(typed - PUBLISHED_OR_CONSTANT)}: render "
        f"them from the results registry (helpers.results) or the chapter's own outputs")


def test_the_committed_choices_are_reproduced_from_validation(laptop):
    for task, choice in laptop["choices"].items():
        assert results.choose(laptop, task) == choice


def test_choices_ignore_test_scores_and_follow_validation(laptop):
    rng = np.random.default_rng(0)
    shaken = copy.deepcopy(laptop)
    for entry in shaken["runs"]:  # scramble every test number: no choice may move
        for part in ("test", "test_flips"):
            for value in entry["scores"].get(part, {}).values():
                value["estimate"] = float(rng.random())
    shaken["configs"] = results.seed_spread(shaken["runs"])
    for task in laptop["choices"]:
        assert results.choose(shaken, task) == results.choose(laptop, task)
    for task, choice in laptop["choices"].items():  # lift another candidate on validation
        others = [c for c in choice["candidates"] if c["config"] != choice["config"]]
        if not others:
            continue
        lifted = copy.deepcopy(laptop)
        target = others[0]["config"]
        for entry in lifted["runs"]:
            if results.config_key(entry) == target:
                for part in ("val", "val_flips"):
                    entry["scores"][part]["balanced_accuracy"] = 1.0
        lifted["configs"] = results.seed_spread(lifted["runs"])
        assert results.choose(lifted, task)["config"] == target


def test_configs_table_shows_every_configuration_in_the_order_of_the_choice(laptop):
    table = results.configs_frame(laptop)
    assert len(table) == len(laptop["configs"])
    assert table["seeds"].sum() == len(laptop["runs"])
    for task, choice in laptop["choices"].items():
        rows = table[table["task"] == task]
        assert (rows["chosen"] == "yes").sum() == 1
        assert rows.iloc[0]["chosen"] == "yes", f"{task}: the chosen configuration is not first"
        spread = laptop["configs"][choice["config"]]["stats"]["val"]["balanced_accuracy"]
        assert rows.iloc[0]["val bal. acc., 1 view"] == results.fmt_spread(spread)


def test_tta_is_used_only_when_it_helps_on_validation(laptop):
    for task, choice in laptop["choices"].items():
        stats = laptop["configs"][choice["config"]]["stats"]
        one, four = (stats[p]["balanced_accuracy"]["mean"] for p in ("val", "val_flips"))
        assert choice["view"] == ("4 flips" if four > one else "one view")


def test_every_entry_has_intervals_and_provenance(laptop):
    assert laptop["runs"], "the laptop registry holds no run"
    for entry in laptop["runs"]:
        for part in ("test", "test_flips"):
            for name, value in entry["scores"][part].items():
                if np.isfinite(value["estimate"]):
                    assert value["low"] <= value["estimate"] <= value["high"], (entry["run"], name)
        assert entry["provenance"]["commit"] not in ("", "unknown")
        assert entry["profile"] == "laptop" and entry["wall_time_s"] > 0
