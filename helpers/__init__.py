"""The Skin Lesion Book's helpers: the one package every chapter imports.

Each chapter starts with one call::

    ctx = helpers.setup("02", profile)

which quiets TensorFlow's logs, seeds the random generators, sets the plotting style, reads the
profile from ``book/profiles.yml`` and returns a :class:`Context` with the paths and datasets the
chapter needs. Then ``ctx.check_prerequisites(...)`` checks what earlier chapters must have made
(one clear message naming the chapter to run first) and ``helpers.run_times("02")`` shows how
long the chapter took per profile. Educational tool only: nothing here is a medical diagnosis.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING
from dataclasses import dataclass
from pathlib import Path

from helpers.quiet import install_quiet_tensorflow_import  # noqa: E402

# Before TensorFlow is imported anywhere: keep its C++ logs out of notebook outputs. oneDNN
# stays on (faster training); its start-up notice is silenced by the quiet import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
install_quiet_tensorflow_import()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from helpers import config  # noqa: E402

if TYPE_CHECKING:
    from helpers.run_folders import RunFolder

DISCLAIMER = (
    "Educational tool only, not a medical device: these predictions are not a diagnosis. "
    "Anyone worried about a skin lesion should see a doctor."
)

CHAPTERS: dict[str, str] = {
    "01": "01_exploring_the_data",
    "02": "02_preprocessing",
    "03": "03_transfer_learning",
    "04": "04_metrics_and_uncertainty",
    "05": "05_leakage_and_external_validity",
    "06": "06_explaining_predictions",
    "07": "07_export_and_app",
    "08": "08_before_the_patient",
    "09": "09_better_models",
}
"""Chapter number to notebook name, in reading order."""


_LESION_TABLES: dict[tuple[str, str, str], pd.DataFrame] = {}
"""Lesion tables already built in this process (building one reads every thumbnail)."""


class ChapterOrderError(RuntimeError):
    """A chapter needs something an earlier chapter makes; the message names that chapter."""


@dataclass(frozen=True)
class Context:
    """What a chapter needs to know: its profile and where to read and write."""

    chapter: str
    profile: config.Profile
    data_root: Path
    runs: Path
    figures: Path

    @property
    def seed(self) -> int:
        return self.profile.seed

    def require(self, path: Path, made_by: str, what: str) -> Path:
        """Return ``path`` if it exists, else raise :class:`ChapterOrderError` naming the chapter."""
        if not path.exists():
            name = CHAPTERS.get(made_by, made_by)
            raise ChapterOrderError(
                f"{what} not found at {path}.\nRun chapter {name} first with the same profile: "
                f"python -m helpers.book --profile {self.profile.name} --chapters {made_by}"
            )
        return path

    def studied_run(self, task: str) -> Path:
        """The run folder of ``task`` the book studies, chosen on validation
        (:func:`helpers.results.studied_run`; the test split is not read). Without a complete
        run folder, :class:`ChapterOrderError` naming chapter 03 and its command."""
        from helpers import results, run_folders

        if not run_folders.find_runs(self.runs, task=task):
            self.require(self.runs / "models" / f"{task}__<backbone>__<variant>", made_by="03",
                         what=f"A complete {task} run folder (model.keras + predictions.csv)")
        return results.studied_run(self.runs, task)

    def run_folder(self, name: str, task: str) -> Path:
        """The run folder called ``name`` under ``runs/models`` (a chapter's ``run``
        parameter), or the studied run of ``task`` when ``name`` is empty."""
        if not name:
            return self.studied_run(task)
        return self.require(self.runs / "models" / name / "manifest.json", made_by="03",
                            what=f"The run folder {name!r}").parent

    def load_run(self, task: str, backbone: str = "", variant: str = "finetune") -> RunFolder:
        """Chapter 03's run folder of ``task``/``backbone``/``variant``, loaded; an empty
        ``backbone`` means the studied run (:meth:`studied_run`, chosen on validation; ``variant``
        then plays no part). The run of the default seed, else the first other seed's
        (``--seed N`` runs). A missing run folder raises :class:`ChapterOrderError` naming
        chapter 03 and its command; a backbone the profile does not train, a ``ValueError``
        listing those it does."""
        from helpers import run_folders

        if not backbone:
            return run_folders.load_run(self.studied_run(task))
        if backbone not in self.profile.backbones:
            raise ValueError(f"backbone {backbone!r} is not trained in profile "
                             f"{self.profile.name}; choose one of "
                             f"{', '.join(self.profile.backbones)}")
        path = run_folders.run_path(self.runs, task, backbone, variant)
        if not (path / "manifest.json").exists():
            seeds = run_folders.find_runs(self.runs, task=task, backbone=backbone, variant=variant)
            path = seeds[0] if seeds else path
        self.require(path / "manifest.json", made_by="03",
                     what=f"The {backbone} ({variant}) {task} run folder")
        return run_folders.load_run(path)

    def split_path(self, dataset: str) -> Path:
        """Where the saved train/val/test split of ``dataset`` lives for this profile."""
        return self.runs / "splits" / f"{dataset}.csv"

    def samples(self, dataset: str, *, split: str = "load") -> pd.DataFrame:
        """The sample table of ``dataset`` for this profile, unreadable images excluded.

        ``dataset`` is ``ham10000``, ``ham10000_binary`` (benign/malignant view, same split as
        ``ham10000``) or ``melanoma10k``. ``split`` is ``"load"`` (read the split saved by chapter
        02; a clear error if it is missing), ``"create"`` (compute and save it) or ``"none"``.
        """
        from helpers import datasets, images, lesions, splits

        if split not in ("load", "create", "none"):
            raise ValueError(f"split must be 'load', 'create' or 'none', got {split!r}")
        if dataset not in ("ham10000", "ham10000_binary", "melanoma10k"):
            raise ValueError(f"unknown dataset {dataset!r}: use ham10000, ham10000_binary or "
                             f"melanoma10k")
        base = "ham10000" if dataset.startswith("ham10000") else dataset
        if split == "load":   # before any work, and without writing anything into the runs
            self.require(self.split_path(base), "02", f"The saved {base} split")
        if base == "ham10000":
            full = self.lesion_table("ham10000")
            table = datasets.subsample(full, self.profile.max_images, seed=self.seed)
        else:
            full = self.lesion_table("melanoma10k")
            table = datasets.subsample(full, self.profile.melanoma_max_images, seed=self.seed)
        table, _ = images.check_images(table, progress=False)
        table.attrs = dict(full.attrs)
        if split != "none":
            table = splits.load_or_create_split(table, self.split_path(base), seed=self.seed,
                                                notes=table.attrs.get("group_merges"))
        if dataset == "ham10000_binary":
            table = datasets.binary_view(table)
        return table

    def lesion_table(self, dataset: str) -> pd.DataFrame:
        """All images of ``ham10000`` or ``melanoma10k`` with groups that are lesions.

        HAM10000 photos listed under two lesion ids share one group; a melanoma10k copy of a
        HAM10000 image takes that image's lesion (when HAM10000 is present), and duplicate
        photos inside melanoma10k share one group (:mod:`helpers.lesions`). Thumbnails are
        cached in ``<runs>/thumbnails/``; the pairs that joined groups are written to
        ``<runs>/splits/<dataset>_group_merges.csv``.
        """
        from helpers import datasets, lesions

        key = (dataset, str(self.data_root), str(self.runs))
        if key not in _LESION_TABLES:
            cache = self.runs / "thumbnails"
            if dataset == "ham10000":
                table, pairs = lesions.merge_duplicates(datasets.load_ham10000(self.data_root),
                                                        cache=cache / "ham10000_thumbs.npz")
            elif dataset == "melanoma10k":
                try:
                    ham = self.lesion_table("ham10000")
                except datasets.DatasetNotFoundError:
                    ham = None
                    print("HAM10000 not found: melanoma10k copies of HAM10000 images cannot be "
                          "joined to their lesions; only duplicates inside melanoma10k are "
                          "grouped.")
                table, pairs = lesions.merge_duplicates(
                    datasets.load_melanoma10k(self.data_root),
                    cache=cache / "melanoma10k_thumbs.npz", reference=ham,
                    reference_cache=cache / "ham10000_thumbs.npz")
            else:
                raise ValueError(f"unknown dataset {dataset!r}: use ham10000 or melanoma10k")
            self.split_path(dataset).parent.mkdir(parents=True, exist_ok=True)
            pairs.to_csv(self.merges_path(dataset), index=False)
            _LESION_TABLES[key] = table
        table = _LESION_TABLES[key]
        out = table.copy()
        out.attrs = dict(table.attrs)
        return out

    def merges_path(self, dataset: str) -> Path:
        """The pairs of images that joined two groups of ``dataset`` (see :meth:`lesion_table`)."""
        return self.runs / "splits" / f"{dataset}_group_merges.csv"

    def has_dataset(self, name: str) -> bool:
        """Whether dataset ``name`` is found in the data root (cheap: nothing is read)."""
        from helpers import datasets

        try:
            datasets.locate(name, self.data_root)
        except datasets.DatasetNotFoundError:
            return False
        return True

    def check_prerequisites(self, *, data: Sequence[str] = (), splits: Sequence[str] = (),
                            runs: Sequence[str] = (), masks: bool = False,
                            optional: Sequence[str] = ()) -> pd.DataFrame:
        """What the chapter needs, checked before any expensive work; the checklist as a table.

        ``data``: datasets that must be found; ``splits``: datasets whose split chapter 02
        saved; ``runs``: tasks with at least one finished chapter 03 run folder; ``masks``:
        HAM10000's lesion masks. Anything missing raises one :class:`ChapterOrderError` that
        lists all of it and names the earliest chapter to run first, with its command.

        ``optional``: datasets the chapter can do without (melanoma10k, which needs your own
        Kaggle credentials). One that is found is checked like ``data``, and its split and runs
        when listed are required; one that is missing is listed as "no (optional: sections
        skipped)", its split and runs are not asked for, and one note says so. The chapter
        skips its sections with ``ctx.has_dataset(name)``.
        """
        from helpers import datasets, run_folders

        rows, missing, chapters = [], [], set()
        absent = [name for name in optional if not self.has_dataset(name)]

        def need(what: str, where: Path | str, found: bool, remedy: str,
                 made_by: str | None = None) -> None:
            rows.append({"needs": what, "where": str(where), "found": "yes" if found else "NO"})
            if not found:
                missing.append(f"- {what} ({where}): {remedy}")
                if made_by:
                    chapters.add(made_by)

        for name in dict.fromkeys([*data, *optional]):
            if name in absent:
                rows.append({"needs": f"dataset {name}",
                             "where": str(datasets.dataset_dir(name, self.data_root)),
                             "found": "no (optional: sections skipped)"})
                continue
            try:
                need(f"dataset {name}", datasets.locate(name, self.data_root), True, "")
            except datasets.DatasetNotFoundError as err:
                need(f"dataset {name}", datasets.dataset_dir(name, self.data_root), False,
                     " ".join(str(err).split()))
        for name in splits:
            if name in absent:
                continue
            need(f"the {name} split", self.split_path(name), self.split_path(name).exists(),
                 f"made by chapter {CHAPTERS['02']}", "02")
        for task in runs:
            if task in absent:
                continue
            found = run_folders.find_runs(self.runs, task=task)
            first = (self.profile.backbones if task == "ham10000"
                     else self.profile.melanoma_backbones)[0]
            need(f"a {task} run folder", found[0] if found else self.runs / "models", bool(found),
                 f"made by chapter {CHAPTERS['03']} (all backbones), or for one backbone by "
                 f"python -m helpers.training --profile {self.profile.name} --task {task} "
                 f"--backbone {first}", "03")
        if masks:
            folder = self.data_root / "ham10000" / "masks"
            need("HAM10000 lesion masks", folder, folder.is_dir() and any(folder.iterdir()),
                 f"run `python -m helpers.datasets download ham10000 --only "
                 f"{datasets.HAM10000_MASKS.name}` (10.8 MB from Harvard Dataverse, MD5-checked) "
                 f"or put HAM10000's *_segmentation.png masks there (data/README.md)")
        if missing:
            message = (f"Chapter {CHAPTERS.get(self.chapter, self.chapter)} cannot run yet; "
                       f"it needs:\n" + "\n".join(missing))
            if chapters:
                first = min(chapters)
                message += (f"\nRun chapter {CHAPTERS[first]} first with the same profile: "
                            f"python -m helpers.book --profile {self.profile.name} "
                            f"--chapters {first}")
            raise ChapterOrderError(message)
        for name in absent:
            info, folder = datasets.REGISTRY[name], datasets.dataset_dir(name, self.data_root)
            print(f"Note: {info.name} ({name}) is not found in {folder}. It is optional: the "
                  f"sections that use it are skipped, everything else runs on HAM10000 alone. "
                  f"To include them, {info.how_to_get.format(folder=folder)}.")
        return pd.DataFrame(rows).set_index("needs")

    def savefig(self, fig, name: str) -> Path:
        """Save a matplotlib figure to ``figures/<name>.png`` and return the path."""
        path = self.figures / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path


def run_times(chapter: str) -> pd.DataFrame | None:
    """How long ``chapter`` took to run, per profile, and its peak memory (the book runner plus
    the chapter's kernel) and the size of the run folders after it, as measured by the runner.

    From the profile's results registry (``book/results/<profile>.json``) when it records the
    chapter, else from this machine's executed records (``book/executed/<profile>/``). A chapter
    run once per backbone (chapter 03) has one row per profile with the total and the range.
    ``None``, with a line saying how to measure one, when no profile has run it yet.
    """
    import json

    from helpers import book, results
    from helpers.resources import largest_gib

    name = CHAPTERS[chapter]
    rows = []
    for prof in config.profile_names():
        source, times = "", {}
        registry = results.registry_path(prof)
        if registry.exists():
            recorded = json.loads(registry.read_text()).get("chapters", {})
            times = {k: v for k, v in recorded.items() if k.split("__")[0] == name}
            source = str(registry.relative_to(config.REPO_ROOT))
        if not times:
            times = {r.stem: json.loads(r.read_text())
                     for r in sorted((book.EXECUTED_DIR / prof).glob(f"{name}*.json"))}
            source = "book runner records on this machine"
        walls = [t["wall_time_s"] for t in times.values() if t.get("wall_time_s")]
        if not walls:
            continue
        rows.append({"profile": prof, "notebook runs": len(walls),
                     "minutes": round(sum(walls) / 60, 1),
                     "minutes per run": (f"{min(walls) / 60:.1f}" if len(walls) == 1 else
                                         f"{min(walls) / 60:.1f}-{max(walls) / 60:.1f}"),
                     "peak memory (GiB)": largest_gib(t.get("peak_memory_mb")
                                                      for t in times.values()),
                     "run folders after (GiB)": largest_gib(t.get("runs_disk_mb")
                                                            for t in times.values()),
                     "measured": max(str(t.get("finished", ""))[:10] for t in times.values()),
                     "source": source})
    if not rows:
        print(f"No measured run of chapter {name} yet: `python -m helpers.book --profile smoke "
              f"--chapters {chapter}` records one.")
        return None
    return pd.DataFrame(rows).set_index("profile")


def setup(chapter: str, profile: str = "smoke", *, data_root: str | Path | None = None,
          tensorflow: bool = False) -> Context:
    """Prepare a chapter: quiet logs, seeds, plot style, profile and paths.

    ``profile`` must name a profile in ``book/profiles.yml`` (a bad papermill parameter fails
    here with the list of valid names). With ``tensorflow=True`` Keras is seeded too.
    """
    prof = config.load_profile(profile)
    random.seed(prof.seed)
    np.random.seed(prof.seed)
    if tensorflow:
        import warnings

        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(prof.seed)
        tf.get_logger().setLevel("ERROR")  # retracing notices: noise in a lesson
        # fit() on a tf.data pipeline that shuffles itself: Keras' notice is noise too
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    import matplotlib
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 110, "figure.max_open_warning": 0})
    pd.set_option("display.precision", 3)
    ctx = Context(chapter=chapter, profile=prof, data_root=config.data_root(data_root),
                  runs=config.runs_root(prof.name), figures=config.figures_dir())
    print(f"Chapter {chapter} | profile {prof.name}: {prof.description}")
    print(f"Data: {ctx.data_root}   Artifacts: {ctx.runs}")
    return ctx
