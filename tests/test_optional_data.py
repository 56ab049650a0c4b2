"""melanoma10k is optional: a HAM10000-only data root runs the book, skipping what needs it.

melanoma10k needs the reader's own Kaggle credentials. Without it chapters 01, 02 and 04 skip
their melanoma10k sections (``ctx.has_dataset`` and ``check_prerequisites(optional=...)``), the
book runner leaves out chapter 03's melanoma10k runs, and chapters 06-08 only ever ask for
HAM10000. Checked here without executing whole chapters.
"""

from __future__ import annotations

import ast

import jupytext
import pytest

import helpers
from helpers import book, config, notebooks


@pytest.fixture
def ham_only(tmp_path, monkeypatch):
    """A data root holding only ``ham10000/`` (a metadata file is what locating it needs), also
    set as ``$SKINBOOK_DATA``, and an empty runs folder."""
    (tmp_path / "data" / "ham10000").mkdir(parents=True)
    (tmp_path / "data" / "ham10000" / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


def context(root, tmp_path, chapter="04") -> helpers.Context:
    return helpers.Context(chapter=chapter, profile=config.load_profile("smoke"), data_root=root,
                           runs=tmp_path / "runs" / "smoke", figures=tmp_path / "figures")


def test_missing_optional_dataset_is_listed_skipped_and_noted(ham_only, tmp_path, capsys):
    ctx = context(ham_only, tmp_path, "01")
    assert ctx.has_dataset("ham10000") and not ctx.has_dataset("melanoma10k")
    checklist = ctx.check_prerequisites(data=["ham10000"], optional=["melanoma10k"])
    assert checklist["found"].to_dict() == {"dataset ham10000": "yes",
                                            "dataset melanoma10k": "no (optional: sections skipped)"}
    assert checklist.loc["dataset melanoma10k", "where"] == str(ham_only / "melanoma10k")
    note = capsys.readouterr().out
    assert note.count("Note:") == 1
    assert "is optional: the sections that use it are skipped" in note
    assert "kaggle datasets download" in note  # how to get it


def test_missing_optional_dataset_needs_neither_its_split_nor_its_runs(ham_only, tmp_path):
    """Chapters 04 and 05's check: without melanoma10k only HAM10000's split and run are asked for."""
    ctx = context(ham_only, tmp_path)
    with pytest.raises(helpers.ChapterOrderError) as failure:
        ctx.check_prerequisites(splits=["ham10000", "melanoma10k"],
                                runs=["ham10000", "melanoma10k"], optional=["melanoma10k"])
    message = str(failure.value)
    assert "the ham10000 split" in message and "a ham10000 run folder" in message
    assert "melanoma10k" not in message
    assert "Run chapter 02_preprocessing first" in message


def test_optional_dataset_that_is_found_is_required_like_the_others(ham_only, tmp_path):
    (ham_only / "melanoma10k" / "train").mkdir(parents=True)
    ctx = context(ham_only, tmp_path)
    assert ctx.has_dataset("melanoma10k")
    with pytest.raises(helpers.ChapterOrderError, match="the melanoma10k split"):
        ctx.check_prerequisites(splits=["melanoma10k"], optional=["melanoma10k"])
    checklist = ctx.check_prerequisites(optional=["melanoma10k"])
    assert checklist.loc["dataset melanoma10k", "found"] == "yes"


def test_required_dataset_still_fails(tmp_path):
    ctx = context(tmp_path, tmp_path)
    with pytest.raises(helpers.ChapterOrderError, match="dataset ham10000"):
        ctx.check_prerequisites(data=["ham10000"], optional=["melanoma10k"])


def test_runner_plan_leaves_out_melanoma_runs_of_chapter_03(ham_only, capsys):
    smoke = config.load_profile("smoke")
    runs = book.plan(smoke)  # the data root from $SKINBOOK_DATA, as `python -m helpers.book`
    assert [r.suffix for r in runs if r.chapter == "03"] == [
        f"ham10000__{b}" for b in smoke.backbones]
    assert {r.chapter for r in runs} == set(helpers.CHAPTERS)  # every chapter still runs
    out = capsys.readouterr().out
    assert f"{len(smoke.melanoma_backbones)} melanoma10k run(s) are skipped" in out
    assert str(ham_only) in out
    (ham_only / "melanoma10k" / "train").mkdir(parents=True)
    assert [r.suffix for r in book.plan(smoke, ["03"]) if "melanoma10k" in r.suffix] == [
        f"melanoma10k__{b}" for b in smoke.melanoma_backbones]


# --- the chapters: melanoma10k only as an optional dataset, its code behind `has_melanoma` ------

def _chapter_trees():
    for source in notebooks.sources():
        cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
        code = "\n".join(c.source for c in cells if not c.source.lstrip().startswith(("%", "!")))
        yield source.stem, ast.parse(code)


TREES = list(_chapter_trees())


def _keyword_names(call: ast.Call, keyword: str) -> set[str]:
    for kw in call.keywords:
        if kw.arg == keyword and isinstance(kw.value, (ast.List, ast.Tuple)):
            return {e.value for e in kw.value.elts if isinstance(e, ast.Constant)}
    return set()


@pytest.mark.parametrize("stem,tree", TREES, ids=[stem for stem, _ in TREES])
def test_chapters_need_melanoma10k_only_optionally(stem, tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "check_prerequisites":
            asked = set().union(*(_keyword_names(node, k) for k in ("data", "splits", "runs")))
            optional = _keyword_names(node, "optional")
            assert "melanoma10k" not in asked - optional, (
                f"{stem}: check_prerequisites asks for melanoma10k without optional=")
            if stem[:2] in ("06", "07", "08"):
                assert "melanoma10k" not in asked | optional, f"{stem} needs HAM10000 runs only"


def _guarded(tree: ast.AST) -> set[int]:
    """Ids of nodes under `if has_melanoma:` or in `... if has_melanoma else ...`."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)) and isinstance(node.test, ast.Name) and \
                node.test.id == "has_melanoma":
            body = node.body if isinstance(node, ast.If) else [node.body]
            for stmt in body:
                inside |= {id(n) for n in ast.walk(stmt)}
    return inside


@pytest.mark.parametrize("stem,tree", TREES, ids=[stem for stem, _ in TREES])
def test_chapters_load_melanoma10k_only_behind_the_flag(stem, tree):
    inside = _guarded(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", "")
        literal = [a.value for a in node.args if isinstance(a, ast.Constant)]
        if name == "load_melanoma10k" or (name in ("samples", "lesion_table")
                                          and "melanoma10k" in literal):
            assert id(node) in inside, (
                f"{stem}, line {node.lineno}: melanoma10k is loaded outside `if has_melanoma:`")


@pytest.mark.parametrize("stem,tree", TREES, ids=[stem for stem, _ in TREES])
def test_names_made_behind_the_flag_are_used_only_behind_it(stem, tree):
    """Without melanoma10k a guarded cell defines nothing: no later unguarded cell may use it."""
    inside = _guarded(tree)
    made_inside, made_outside, used_outside = set(), set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):  # function and lambda parameters
            (made_inside if id(node) in inside else made_outside).add(node.arg)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                (made_inside if id(node) in inside else made_outside).add(node.id)
            elif id(node) not in inside:
                used_outside.setdefault(node.id, node.lineno)
    leaks = {n: line for n, line in used_outside.items()
             if n in made_inside and n not in made_outside}
    assert not leaks, f"{stem}: names only defined under `if has_melanoma:` used outside: {leaks}"
