"""The papermill runner and the profiles it reads."""

from __future__ import annotations

import shutil

import pytest

import helpers
from helpers import book, config


def test_profiles_load_and_are_ordered_by_size():
    names = config.profile_names()
    assert names[:3] == ["smoke", "laptop", "full"]
    smoke, laptop, full = (config.load_profile(n) for n in names[:3])
    assert smoke.max_images is not None and laptop.max_images is None
    assert smoke.height * smoke.width < laptop.height * laptop.width <= full.height * full.width


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown profile 'tiny'.*smoke, laptop, full"):
        config.load_profile("tiny")


def test_profile_file_with_a_typo_is_rejected(tmp_path):
    bad = tmp_path / "profiles.yml"
    text = config.PROFILES_FILE.read_text(encoding="utf-8").replace("batch_size:", "batchsize:", 1)
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="unknown keys: \\['batchsize'\\]"):
        config.load_profile("smoke", bad)


def test_plan_follows_reading_order_and_rejects_unknown_chapters():
    smoke = config.load_profile("smoke")
    runs = book.plan(smoke)
    assert [r.chapter for r in runs] == sorted(r.chapter for r in runs)
    assert {r.chapter for r in runs} == set(helpers.CHAPTERS)
    assert all(r.parameters["profile"] == "smoke" for r in runs)
    with pytest.raises(ValueError, match="unknown chapters \\['99'\\]"):
        book.plan(smoke, ["99"])


def test_bad_papermill_parameter_stops_with_chapter_and_cell():
    """A real chapter run with a bad profile fails with a message naming chapter and cell."""
    run = book.Run(chapter="01", parameters={"profile": "tiny"})
    try:
        with pytest.raises(book.ChapterFailed) as failure:
            book.execute(run, "pytest-bad-parameter")
        message = str(failure.value)
        assert "Chapter 01_exploring_the_data failed in cell" in message
        assert "(`import matplotlib.pyplot as plt`)" in message
        assert "ValueError: Unknown profile 'tiny'" in message
        assert "smoke, laptop, full" in message
    finally:
        shutil.rmtree(book.EXECUTED_DIR / "pytest-bad-parameter", ignore_errors=True)


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit) as exit_:
        book.main(["--profile", "tiny"])
    assert exit_.value.code == 2
    assert "invalid choice: 'tiny'" in capsys.readouterr().err


def test_every_executed_chapter_records_its_time_memory_and_disk():
    """The book runner's record of each executed smoke chapter (what `helpers.run_times` and the
    README's resource table read): wall time, the peak memory of runner plus kernel (a kernel
    with TensorFlow loaded holds far more than 200 MiB), and the run folders' size after it
    (empty after chapter 01 on a fresh clone)."""
    import json

    records = sorted((book.EXECUTED_DIR / "smoke").glob("*.json"))
    if not records:
        pytest.skip("no executed smoke chapters: run `python -m helpers.book --profile smoke`")
    for record in records:
        data = json.loads(record.read_text())
        assert data["wall_time_s"] > 0, record.name
        assert data["peak_memory_mb"] > 200, record.name
        # chapter 01 writes no run folder; from chapter 02 on (the saved split) there is one
        assert data["runs_disk_mb"] > 0 or record.name.startswith("01_"), record.name


def test_a_book_run_keeps_registry_entries_it_has_no_run_folder_for(tmp_path, monkeypatch):
    """Running one chapter on a machine with only part of the run folders (here: none) must not
    drop the registry's other runs or the recorded times of chapters not executed here."""
    import json

    from helpers import results

    laptop = results.load("laptop")
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setenv(config.RUNS_ENV, str(tmp_path / "runs"))  # no run folders at all
    monkeypatch.setattr(book, "EXECUTED_DIR", tmp_path / "executed")  # no chapter records
    (tmp_path / "results").mkdir()
    earlier = {**laptop, "profile": "smoke", "runs": laptop["runs"][:2], "derived": [],
               "chapters": {"09_better_models": {"wall_time_s": 12.5}}}
    results.write(earlier)
    book.update_results("smoke")
    after = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert [e["run"] for e in after["runs"]] == [e["run"] for e in earlier["runs"]]
    assert after["kept"] == [e["run"] for e in earlier["runs"]]
    assert after["chapters"] == earlier["chapters"]


def test_a_chapter_edited_while_it_runs_is_not_recorded_as_current(tmp_path, monkeypatch):
    """The record's fingerprint is what the chapter ran with: an edit made during a long
    execution (here, to the chapter's source) leaves the chapter to run again next time."""
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    source = chapters / f"{helpers.CHAPTERS['01']}.py"
    source.write_text((book.CHAPTERS_DIR / source.name).read_text())
    monkeypatch.setattr(book, "CHAPTERS_DIR", chapters)
    executed = config.REPO_ROOT / "tests" / "_artifacts" / "executed-while-edited"
    shutil.rmtree(executed, ignore_errors=True)
    monkeypatch.setattr(book, "EXECUTED_DIR", executed)  # inside the repo: the runner prints it
    monkeypatch.setattr(book, "update_results", lambda profile: None)

    edit_while_running = True

    def execute(run, profile, cell_timeout_s=None):
        out = run.output(profile)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
        if edit_while_running:
            source.write_text(source.read_text() + "\n# edited while the chapter ran\n")
        return out

    monkeypatch.setattr(book, "execute", execute)
    assert book.main(["--profile", "smoke", "--chapters", "01"]) == 0
    run = book.plan(config.load_profile("smoke"), ["01"])[0]
    assert not book.is_current(run, config.load_profile("smoke"))

    edit_while_running = False
    assert book.main(["--profile", "smoke", "--chapters", "01"]) == 0
    assert book.is_current(run, config.load_profile("smoke"))
    shutil.rmtree(executed)
