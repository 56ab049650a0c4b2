"""Build the book's website (Jupyter Book 1.x) from the executed chapters of one profile.

    python -m helpers.site --profile smoke        # or: make site PROFILE=smoke

Steps, each of which can fail the build with a message naming the notebook:

1. **Check** every executed notebook in ``book/executed/<profile>/`` that the runner's plan
   (:func:`helpers.book.plan`) lists: a notebook with an error output, a papermill exception or
   cells left unexecuted (the run stopped there) fails the build. Jupyter Book itself never
   executes anything here (``execute_notebooks: off``), so it cannot hide a failed chapter.
2. **Stage** a build source folder ``book/_build/<profile>/src/`` that mirrors the repository:
   ``intro.md`` (from ``book/intro.md`` with the disclaimer and dataset citations filled in from
   the code), ``chapters/<executed notebook>.ipynb`` (TensorFlow log noise removed from outputs,
   solutions folded with their outputs), ``figures/`` and a ``_toc.yml`` generated from the plan, in plan
   order: one page per executed notebook; a chapter run several times (chapter 03, once per
   backbone) gets a generated parent page with its runs as sections. The appendices
   (:data:`APPENDICES`, markdown pages such as ``book/training_at_scale.md``) follow the
   chapters, copied as they are.
3. **Build** with ``jupyter-book build -W --keep-going`` (warnings are errors), then grep the log
   for failed executions and check that every staged page has its HTML file.

The site ends up in ``book/_build/<profile>/_build/html/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

from helpers import CHAPTERS, DISCLAIMER, config

BOOK_DIR = config.REPO_ROOT / "book"
BUILD_DIR = BOOK_DIR / "_build"
CONFIG_FILE = BOOK_DIR / "_config.yml"
INTRO_FILE = BOOK_DIR / "intro.md"
APPENDICES = (BOOK_DIR / "training_at_scale.md",)
"""Markdown pages shown after the chapters, copied as they are: they name repository files in
code spans rather than linking them (a link to a file the site lacks fails the build)."""

# --- TensorFlow / Keras log noise -----------------------------------------------------------

NOISE_LINES = [re.compile(p) for p in (
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]",        # absl C++ log lines (I0000 12:00:00.1 …)
    r"^WARNING: All log messages before absl::InitializeLog",
    r"^WARNING:absl:",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .*rebuild TensorFlow",
    r"Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning",
    r"cuda_(dnn|fft|blas|executor|driver)\.cc|computation_placer\.cc|cpu_feature_guard\.cc",
    r"^\s*\d+/\d+ ━+\s+\d+m?s \d+m?s/step\s*$",                 # bare Keras progress bars
)]
"""Lines of stream output that are TensorFlow's logs, never the lesson: removed from the site."""
WARNING_LINE = re.compile(r"site-packages/(tensorflow|keras|absl|tf_keras|tqdm)/\S+:\d+: \w*Warning: ")
"""A Python warning raised inside TensorFlow/Keras (or tqdm's "IProgress not found" in a
headless kernel): removed with the source line printed under it."""


def strip_noise(text: str) -> tuple[str, int]:
    """``text`` without TensorFlow log lines, and how many lines were removed."""
    kept, removed, skip_next = [], 0, False
    for line in text.splitlines(keepends=True):
        if skip_next and line.startswith((" ", "\t")):
            removed += 1
            skip_next = False
            continue
        skip_next = False
        if WARNING_LINE.search(line):
            removed += 1
            skip_next = True
        elif any(p.search(line) for p in NOISE_LINES):
            removed += 1
        else:
            kept.append(line)
    return "".join(kept), removed


# --- what the site shows ----------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    """One executed notebook of the plan: its chapter and the file name it has on the site."""

    chapter: str
    name: str          # executed notebook stem, e.g. 03_transfer_learning__ham10000__densenet121
    source: Path       # the executed notebook
    suffix: str = ""


class SiteError(RuntimeError):
    """The site cannot be built, or built with errors; the message says which notebook and why."""


def planned_pages(profile: str, executed_dir: Path | None = None,
                  published_dir: Path | None = None) -> tuple[list[Page], list[Path]]:
    """The executed notebooks of ``profile`` in plan order, and the planned ones that are missing.

    A planned notebook not executed here is taken from ``published_dir`` when it has a copy
    (the committed laptop book): a machine that re-ran one chapter still builds the whole site.
    """
    from helpers import book

    prof = config.load_profile(profile)
    folder = Path(executed_dir) if executed_dir else book.EXECUTED_DIR / profile
    pages, missing = [], []
    for run in book.plan(prof):
        name = run.output(profile).name
        candidates = [folder / name] + ([Path(published_dir) / name] if published_dir else [])
        found = next((p for p in candidates if p.exists()), None)
        if found:
            pages.append(Page(run.chapter, found.stem, found, run.suffix))
        else:
            missing.append(folder / name)
    return pages, missing


def notebook_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why an executed notebook shows a failed run: error outputs, papermill errors, skipped cells."""
    problems = []
    papermill = nb.metadata.get("papermill", {})
    if papermill.get("exception"):
        problems.append("papermill recorded an exception (the run failed)")
    pending = 0
    for i, cell in enumerate(nb.cells):
        if "papermill-error-cell-tag" in cell.metadata.get("tags", []):
            continue
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                problems.append(f"cell {i} (`{first[:60]}`) raised {out.get('ename')}: "
                                f"{str(out.get('evalue'))[:200]}")
        status = cell.metadata.get("papermill", {}).get("status")
        if status == "pending" or (cell.source.strip() and cell.execution_count is None
                                    and papermill):
            pending += 1
    if pending:
        problems.append(f"{pending} code cell(s) never executed (the run stopped early)")
    return problems


def check_executed(pages: list[Page]) -> None:
    """Raise :class:`SiteError` listing every executed notebook that shows a failed run."""
    failures = []
    for page in pages:
        problems = notebook_problems(nbformat.read(page.source, as_version=4))
        failures += [f"{page.source.name}: {p}" for p in problems]
    if failures:
        raise SiteError("Executed notebooks show failed runs; fix the chapter and re-run it "
                        "(python -m helpers.book):\n  " + "\n  ".join(failures))


CHAPTER_LINK = re.compile(r"\[([^\]]*)\]\((\d\d_[A-Za-z0-9_]+)\.ipynb(#[^)]*)?\)")


def rewrite_links(text: str, pages: set[str]) -> str:
    """Point links between chapters at the pages this build has.

    A chapter links the next one as ``[...](03_transfer_learning.ipynb)``, which works in
    JupyterLab. On the site that name is either a page, a generated parent page (``.md``, for a
    chapter run once per backbone) or absent from this build (then the link becomes plain text,
    instead of a broken link that fails the build).
    """
    def fix(match: re.Match) -> str:
        label, stem, anchor = match.group(1), match.group(2), match.group(3) or ""
        if f"{stem}.ipynb" in pages:
            return match.group(0)
        if f"{stem}.md" in pages:
            return f"[{label}]({stem}.md{anchor})"
        return f"{label} (not part of this build)"
    return CHAPTER_LINK.sub(fix, text)


SOLUTION_FENCE = ":::{admonition} Answer\n:class: dropdown"
"""Opens the folded box a written answer (a markdown cell tagged ``solution``) is shown in."""
WIDGET = "application/vnd.jupyter.widget-view+json"
"""The output of an ipywidget, which needs a running kernel (:mod:`helpers.interactive`)."""


def clean_notebook(nb: nbformat.NotebookNode,
                   pages: set[str] | None = None) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` for the site: TensorFlow noise stripped, solutions folded (code cells
    with their outputs, written answers in a dropdown), live widgets dropped (each comes after
    its static figure), links to other chapters pointed at this build's pages (``pages``:
    staged file names)."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    removed = 0
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "markdown" and pages is not None:
            cell.source = rewrite_links(cell.source, pages)
        if cell.cell_type == "markdown" and "solution" in tags:
            cell.source = f"{SOLUTION_FENCE}\n\n{cell.source}\n:::"  # a written answer, folded
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")     # papermill's copy of the parameters: the intro says it
        if "solution" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")       # the answer and its outputs are one click away
        outputs = []
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                continue                   # a live widget: its static figure is the output before
            if out.get("output_type") == "stream":
                text, n = strip_noise(out.get("text", ""))
                removed += n
                if not text.strip():
                    continue
                out["text"] = text
            outputs.append(out)
        cell.outputs = outputs
    return nb, removed


def chapter_title(chapter: str) -> str:
    """``"03"`` -> ``"Transfer learning"`` (from the notebook name in helpers.CHAPTERS)."""
    words = CHAPTERS[chapter].split("_", 1)[1].replace("_", " ")
    return words[:1].upper() + words[1:]


def render_intro(profile: config.Profile, template: Path = INTRO_FILE) -> str:
    """``book/intro.md`` with the disclaimer, dataset citations and build profile filled in."""
    from helpers.datasets import REGISTRY

    citations = "\n".join(
        f"- **{info.name}**: {info.citation}. Licence: {info.licence}." for info in REGISTRY.values()
    )
    text = template.read_text(encoding="utf-8")
    for marker, value in (("DISCLAIMER", DISCLAIMER), ("CITATIONS", citations),
                          ("PROFILE", f"`{profile.name}` ({profile.description.rstrip('.')})")):
        tag = f"<!-- {marker} -->"
        if tag not in text:
            raise SiteError(f"{template} lost its {tag} marker; put it back where the "
                            f"{marker.lower()} goes")
        text = text.replace(tag, value)
    return text


def run_label(page: Page) -> str:
    """``ham10000__densenet121`` -> ``ham10000 / densenet121``: which run of a chapter a page is."""
    return page.suffix.replace("__", " / ")


def label_run(nb: nbformat.NotebookNode, page: Page) -> None:
    """Append the run (task / backbone) to the notebook's title, so its pages differ."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.split("\n")
            for i, line in enumerate(lines):
                if line.startswith("# "):
                    lines[i] = f"{line.rstrip()} ({run_label(page)})"
                    cell.source = "\n".join(lines)
                    return


def make_toc(pages: list[Page]) -> tuple[dict, dict[str, str]]:
    """The ``_toc.yml`` (as a dict) and any generated parent pages (file stem -> markdown)."""
    entries, parents = [], {}
    by_chapter: dict[str, list[Page]] = {}
    for page in pages:
        by_chapter.setdefault(page.chapter, []).append(page)
    for chapter, group in by_chapter.items():
        if len(group) == 1 and not group[0].suffix:
            entries.append({"file": f"chapters/{group[0].name}"})
            continue
        stem = CHAPTERS[chapter]
        runs = "\n".join(f"- [{run_label(p)}]({p.name}.ipynb)" for p in group)
        parents[stem] = (
            f"# {int(chapter)}. {chapter_title(chapter)}\n\n"
            f"This chapter ran once per configuration in this build; each run is its own page:\n\n"
            f"{runs}\n"
        )
        entries.append({"file": f"chapters/{stem}",
                        "sections": [{"file": f"chapters/{p.name}", "title": run_label(p)}
                                     for p in group]})
    return {"format": "jb-book", "root": "intro", "chapters": entries}, parents


def stage(profile: str, pages: list[Page], src: Path) -> int:
    """Write the build source folder ``src``; return how many noise lines were stripped."""
    prof = config.load_profile(profile)
    if src.exists():
        shutil.rmtree(src)
    (src / "chapters").mkdir(parents=True)
    cfg = yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))
    cfg["title"] = f"{cfg.get('title', 'The Skin Lesion Book')}"
    (src / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    (src / "intro.md").write_text(render_intro(prof), encoding="utf-8")
    toc, parents = make_toc(pages)
    for appendix in APPENDICES:
        shutil.copy(appendix, src / appendix.name)
        toc["chapters"].append({"file": appendix.stem})
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    for stem, text in parents.items():
        (src / "chapters" / f"{stem}.md").write_text(text, encoding="utf-8")
    staged = {f"{p.name}.ipynb" for p in pages} | {f"{stem}.md" for stem in parents}
    removed = 0
    for page in pages:
        nb, n = clean_notebook(nbformat.read(page.source, as_version=4), staged)
        if page.suffix:
            label_run(nb, page)
        removed += n
        nbformat.write(nb, src / "chapters" / f"{page.name}.ipynb")
    figures = config.REPO_ROOT / "figures"
    if figures.is_dir():   # markdown may link ../figures/x.png, as it does from chapters/
        shutil.copytree(figures, src / "figures")
    return removed


LOG_FAILURES = re.compile(r"(Executing notebook failed|execution failed|CellExecutionError|"
                          r"Traceback \(most recent call last\)|\bERROR\b|WARNING:)")


def build(profile: str = "smoke", *, executed_dir: Path | None = None,
          published_dir: Path | None = None, output: Path | None = None,
          require_all: bool = False, quiet: bool = False) -> Path:
    """Check, stage and build the site of ``profile``; return the HTML folder (notebooks not
    in ``executed_dir`` come from ``published_dir`` when it has them).

    Raises :class:`SiteError` when a notebook failed, nothing was executed, a planned notebook
    is missing and ``require_all`` is set, or Jupyter Book reported a warning or error.
    """
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    pages, missing = planned_pages(profile, executed_dir, published_dir)
    if published_dir:
        from_published = [p.name for p in pages if p.source.parent == Path(published_dir)]
        if from_published:
            say(f"{len(from_published)} of {len(pages)} notebook(s) from the published copies "
                f"in {published_dir} (not executed on this machine)")
    if not pages:
        raise SiteError(f"No executed notebooks for profile {profile!r}. Run the book first: "
                        f"python -m helpers.book --profile {profile}")
    if missing:
        names = ", ".join(p.name for p in missing)
        if require_all:
            raise SiteError(f"Planned notebooks not executed yet: {names}. Run "
                            f"python -m helpers.book --profile {profile}")
        say(f"Note: not executed yet, left out of the site: {names}")
    check_executed(pages)
    out = Path(output) if output else BUILD_DIR / profile
    src = out / "src"
    removed = stage(profile, pages, src)
    say(f"Staged {len(pages)} notebook(s) in {src}"
        + (f"; removed {removed} TensorFlow log line(s)" if removed else ""))
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(src), "--path-output", str(out),
           "--builder", "html", "--all", "-W", "--keep-going"]
    say("Running: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log, encoding="utf-8")
    bad = [line for line in log.splitlines() if LOG_FAILURES.search(line)]
    if proc.returncode != 0 or bad:
        shown = "\n  ".join(bad[:30]) or log[-3000:]
        raise SiteError(f"Jupyter Book failed (exit {proc.returncode}); full log in "
                        f"{out / 'build.log'}:\n  {shown}")
    absent = [p.name for p in pages if not (html / "chapters" / f"{p.name}.html").exists()]
    absent += [a.stem for a in APPENDICES if not (html / f"{a.stem}.html").exists()]
    if absent or not (html / "intro.html").exists():
        raise SiteError(f"The build left out pages: {absent or ['intro']}; see {out / 'build.log'}")
    say(f"Site built: {html / 'index.html'}")
    return html


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Jupyter Book 1.0 adds sphinx-thebe's inline config script twice; browsers then report
    "Identifier 'THEBE_JS_URL' has already been declared". Keep the first copy of each script."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", str(script)) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique          # in place: it is the builder's own list, others append to it


def setup(app):
    """Sphinx extension hook (``_config.yml`` lists ``helpers.site`` in ``extra_extensions``)."""
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)   # after the others
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.site", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke", choices=config.profile_names())
    parser.add_argument("--executed", type=Path, help="folder of executed notebooks "
                        "(default: book/executed/<profile>; a notebook not executed there "
                        "comes from book/published/<profile>)")
    parser.add_argument("--output", type=Path, help="build folder (default: book/_build/<profile>)")
    parser.add_argument("--require-all", action="store_true",
                        help="fail if a notebook of the plan has not been executed")
    args = parser.parse_args(argv)
    from helpers import publish

    published = publish.PUBLISHED_DIR / args.profile
    try:
        build(args.profile, executed_dir=args.executed, output=args.output,
              published_dir=published if args.executed is None and published.is_dir() else None,
              require_all=args.require_all)
    except SiteError as err:
        print(f"SITE BUILD FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
