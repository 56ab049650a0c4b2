"""The website: built for real from the executed smoke book, served and opened in Chromium.

`make test` runs the smoke book first, so book/executed/smoke/ exists there. Outside CI the
browser test skips when the smoke book was not run or chromium is missing (with the reason);
in CI (CI=true) both are failures. Screenshots go to tests/_artifacts/site/ (git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

import helpers
from helpers import book, config, site
from helpers.datasets import REGISTRY

IN_CI = os.environ.get("CI") == "true"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = config.REPO_ROOT / "tests" / "_artifacts" / "site"
PAGES, MISSING = site.planned_pages("smoke")


def needs(condition: bool, reason: str):
    if not condition:
        if IN_CI:
            pytest.fail(reason + " (required in CI)")
        pytest.skip(reason)


# --- pure parts: noise, table of contents, links -----------------------------------------------

def test_tensorflow_log_noise_is_stripped_and_the_lesson_kept():
    text = (
        "W0000 00:00:1763900000.123456   4321 cpu_feature_guard.cc:210] This TensorFlow binary "
        "is optimized to use available CPU instructions in performance-critical operations.\n"
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1763900001.5   4321 cuda_executor.cc:1001] could not open file\n"
        "/x/.venv/lib/python3.11/site-packages/keras/src/trainers/data_adapters/py_dataset_adapter"
        ".py:121: UserWarning: Your `PyDataset` class should call `super().__init__(**kwargs)`\n"
        "  self._warn_if_super_not_called()\n"
        "WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.\n"
        "3/3 ━━━━━━━━━━━━━━━━━━━━ 1s 250ms/step\n"
        "/x/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
        "  from .autonotebook import tqdm as notebook_tqdm\n"
        "Epoch 1/1: val balanced accuracy 0.31\n"
        "3/3 ━━━━━━━━━━━━━━━━━━━━ 2s 400ms/step - accuracy: 0.5 - loss: 1.2\n"
    )
    kept, removed = site.strip_noise(text)
    assert removed == 9
    assert kept == ("Epoch 1/1: val balanced accuracy 0.31\n"
                    "3/3 ━━━━━━━━━━━━━━━━━━━━ 2s 400ms/step - accuracy: 0.5 - loss: 1.2\n")


def test_solutions_fold_with_their_outputs_and_widgets_leave_their_static_figure():
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "F"})
    widget = nbformat.v4.new_output("display_data", data={
        site.WIDGET: {"model_id": "x"}, "text/plain": "VBox(children=(FloatSlider(...)))"})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("show()", outputs=[figure, widget]),
        nbformat.v4.new_code_cell("answer = 1", metadata={"tags": ["solution"]},
                                  outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_markdown_cell("**Answer.** Because.", metadata={"tags": ["solution"]}),
    ])
    nb.metadata["widgets"] = {"state": {}}
    clean, _ = site.clean_notebook(nb)
    assert clean.cells[0].outputs == [figure] and "widgets" not in clean.metadata
    assert "hide-cell" in clean.cells[1].metadata["tags"] and clean.cells[1].outputs
    assert clean.cells[2].source.startswith(site.SOLUTION_FENCE)
    assert clean.cells[2].source.rstrip().endswith(":::") and "Because." in clean.cells[2].source


def test_toc_follows_the_plan_with_a_parent_page_per_backbone_chapter(tmp_path):
    names = ["01_exploring_the_data", "02_preprocessing",
             "03_transfer_learning__ham10000__densenet121",
             "03_transfer_learning__ham10000__mobilenet_v2", "04_metrics_and_uncertainty"]
    suffixes = ["", "", "ham10000__densenet121", "ham10000__mobilenet_v2", ""]
    pages = [site.Page(n[:2], n, tmp_path / f"{n}.ipynb", s) for n, s in zip(names, suffixes)]
    toc, parents = site.make_toc(pages)
    assert toc["root"] == "intro"
    assert toc["chapters"] == [
        {"file": "chapters/01_exploring_the_data"},
        {"file": "chapters/02_preprocessing"},
        {"file": "chapters/03_transfer_learning", "sections": [
            {"file": "chapters/03_transfer_learning__ham10000__densenet121",
             "title": "ham10000 / densenet121"},
            {"file": "chapters/03_transfer_learning__ham10000__mobilenet_v2",
             "title": "ham10000 / mobilenet_v2"}]},
        {"file": "chapters/04_metrics_and_uncertainty"},
    ]
    assert list(parents) == ["03_transfer_learning"]
    assert "(03_transfer_learning__ham10000__densenet121.ipynb)" in parents["03_transfer_learning"]
    staged = {f"{n}.ipynb" for n in names} | {"03_transfer_learning.md"}
    text = ("Next: [Chapter 3](03_transfer_learning.ipynb), see [2](02_preprocessing.ipynb#top) "
            "and [7](07_export_and_app.ipynb).")
    assert site.rewrite_links(text, staged) == (
        "Next: [Chapter 3](03_transfer_learning.md), see [2](02_preprocessing.ipynb#top) "
        "and 7 (not part of this build).")


def test_notebooks_not_executed_here_come_from_the_published_copies(tmp_path):
    """A machine that re-ran one laptop chapter builds the whole site: the rest is published."""
    executed, published = tmp_path / "executed", tmp_path / "published"
    executed.mkdir()
    published.mkdir()
    plan = book.plan(config.load_profile("smoke"))
    first, second = (run.output("smoke").name for run in plan[:2])
    for folder, name in ((executed, first), (published, first), (published, second)):
        nbformat.write(nbformat.v4.new_notebook(), folder / name)
    pages, missing = site.planned_pages("smoke", executed, published)
    assert [p.source for p in pages] == [executed / first, published / second]
    assert len(missing) == len(plan) - 2 and {m.parent for m in missing} == {executed}
    pages, _ = site.planned_pages("smoke", executed)  # no published folder: what ran here only
    assert [p.source for p in pages] == [executed / first]


def test_intro_has_disclaimer_and_every_dataset_citation():
    intro = site.render_intro(config.load_profile("smoke"))
    assert helpers.DISCLAIMER in intro
    for info in REGISTRY.values():
        assert info.citation in intro and info.licence in intro
    assert "<!--" not in intro and "{tableofcontents}" in intro


# --- failures fail the build ------------------------------------------------------------------

def test_a_failed_chapter_run_fails_the_build(tmp_path, capsys):
    """A real failed papermill run (bad profile) left in the executed folder stops the site."""
    failed = tmp_path / "executed"
    run = book.Run(chapter="01", parameters={"profile": "tiny"})
    try:
        with pytest.raises(book.ChapterFailed):
            book.execute(run, "pytest-site-failed")
        failed.mkdir()
        shutil.copy(run.output("pytest-site-failed"), failed / run.output("smoke").name)
    finally:
        shutil.rmtree(book.EXECUTED_DIR / "pytest-site-failed", ignore_errors=True)
    code = site.main(["--profile", "smoke", "--executed", str(failed),
                      "--output", str(tmp_path / "site")])
    err = capsys.readouterr().err
    assert code == 1
    assert "SITE BUILD FAILED" in err and "01_exploring_the_data.ipynb" in err
    assert "ValueError: Unknown profile 'tiny'" in err
    assert not (tmp_path / "site" / "_build" / "html").exists()


def test_a_jupyter_book_warning_fails_the_build(tmp_path):
    """Warnings are errors: a broken image link in a chapter must not give a green build."""
    needs(bool(PAGES), "no executed smoke notebooks: run `python -m helpers.book --profile smoke`")
    page = PAGES[0]
    folder = tmp_path / "executed"
    folder.mkdir()
    nb = nbformat.read(page.source, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("![a figure](../figures/no_such_figure.png)"))
    nbformat.write(nb, folder / page.source.name)
    with pytest.raises(site.SiteError, match="no_such_figure"):
        site.build("smoke", executed_dir=folder, output=tmp_path / "site", quiet=True)


# --- the real site in a real browser -----------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    needs(bool(PAGES), "no executed smoke notebooks: run `python -m helpers.book --profile smoke`")
    html = site.build("smoke", output=tmp_path_factory.mktemp("site"), require_all=IN_CI,
                      quiet=True)
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass          # the browser dropping a connection early is not the site's fault


@pytest.fixture(scope="module")
def browser():
    needs(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_every_planned_notebook_is_executed_in_ci():
    if IN_CI:
        assert not MISSING, f"planned notebooks missing from book/executed/smoke: {MISSING}"


def test_intro_page_shows_disclaimer_citations_and_toc(served, browser):
    page = browser.new_page()
    page.goto(f"{served}/index.html")
    page.wait_for_url("**/intro.html", timeout=10_000)     # index.html redirects to the intro
    page.wait_for_load_state("load")
    text = page.inner_text("main")
    assert helpers.DISCLAIMER in text
    for info in REGISTRY.values():
        assert info.citation[:60] in text, f"citation of {info.name} missing on the intro page"
    toc = page.eval_on_selector_all(
        "nav.bd-links a.reference.internal", "links => links.map(a => a.getAttribute('href'))")
    for p in PAGES:
        assert any(href.endswith(f"{p.name}.html") for href in toc), f"{p.name} not in the TOC"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "intro.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("page_info", PAGES, ids=[p.name for p in PAGES])
def test_chapter_page_renders_with_its_figures(page_info, served, browser):
    nb = nbformat.read(page_info.source, as_version=4)
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {}))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{served}/chapters/{page_info.name}.html")
    assert response is not None and response.status == 200
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        ".cell_output img", "imgs => imgs.map(i => ({src: i.src, ok: i.complete && "
                            "i.naturalWidth > 0}))")
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"broken images on {page_info.name}: {broken}"
    assert len(images) >= figures, (
        f"{page_info.name}: the notebook has {figures} figure outputs, the page shows {len(images)}")
    all_images = page.eval_on_selector_all("main img", "imgs => imgs.filter(i => !(i.complete && "
                                                       "i.naturalWidth > 0)).map(i => i.src)")
    assert not all_images, f"broken images on {page_info.name}: {all_images}"
    outputs = "\n".join(page.eval_on_selector_all(".cell_output", "els => els.map(e => e.innerText)"))
    assert not page.query_selector_all(".cell_output .output.traceback, .cell_output .output.error")
    assert "Traceback (most recent call last)" not in outputs
    noise = [line for line in outputs.splitlines()
             if site.strip_noise(line + "\n")[1] or re.search(r"\btensorflow/core\b", line)]
    assert not noise, f"TensorFlow log noise on {page_info.name}: {noise[:3]}"
    solutions = sum(1 for c in nb.cells if c.cell_type == "code"
                    and "solution" in c.metadata.get("tags", []))
    folded = page.query_selector_all(".cell.tag_solution.tag_hide-cell")
    assert len(folded) == solutions, f"{page_info.name}: solutions should be folded away"
    answers = sum(1 for c in nb.cells if c.cell_type == "markdown"
                  and "solution" in c.metadata.get("tags", []))
    assert len(page.query_selector_all(".admonition.dropdown")) >= answers, (
        f"{page_info.name}: written answers should be folded away")
    assert not page.query_selector_all(".cell.tag_injected-parameters")
    title = page.inner_text("main h1")
    assert title.strip(), f"{page_info.name} has no title"
    if page_info.suffix:          # one page per backbone: the title says which run it is
        assert site.run_label(page_info) in title
    links = page.eval_on_selector_all("main a[href]", "as => as.map(a => a.href)")
    local = {href.split("#")[0] for href in links if href.startswith(served)}
    dead = [href for href in local if status(href) != 200]
    assert not dead, f"dead links on {page_info.name}: {dead}"
    assert not errors, f"JavaScript errors on {page_info.name}: {errors}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{page_info.name}.png"), full_page=True)
    page.close()
