"""The results registry: what the book measured, with intervals, provenance and its choices.

One command collects every finished run folder of a profile into one small file that is
committed with the book::

    python -m helpers.results --profile laptop            # -> book/results/laptop.json
    python -m helpers.results --profile laptop --render   # ... and rewrite README's tables

For each run it stores the metrics of the validation and test parts, one view and the 4-flip
mean (test-time augmentation), test metrics with lesion-grouped bootstrap 95% intervals, and the
run's commit, profile, seed, epochs, wall time and CPU. Runs that differ only in their seed form
one *configuration*; the registry gives each configuration's mean, standard deviation and range
over seeds.

**Choices are made on validation only** (:func:`choose`): the configuration, whether to use
test-time augmentation, and the run that chapters 04-07 study. The test split is scored and
reported, never compared to choose. Chapters and the README render their "what the book
measured" tables from this file (:func:`markdown_table`, :func:`render_blocks`); a test checks
that the README agrees with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import CHAPTERS, config, metrics
from helpers.resources import largest_gib

RESULTS_DIR = config.REPO_ROOT / "book" / "results"
VIEWS: dict[str, str] = {"one view": "p_", "4 flips": "p4_"}
"""How a run's images are scored: the column prefix of its ``predictions.csv``."""
HEADLINE = ("balanced_accuracy", "macro_auc")
SPECIFICITY = 0.9


def registry_path(profile: str) -> Path:
    return RESULTS_DIR / f"{profile}.json"


def load(profile: str) -> dict:
    """The committed registry of ``profile``; a clear error if it was never collected."""
    path = registry_path(profile)
    if not path.exists():
        raise FileNotFoundError(f"no results registry for profile {profile!r} at {path}; make "
                                f"it with: python -m helpers.results --profile {profile}")
    return json.loads(path.read_text())


# --- collecting ---------------------------------------------------------------------------------

def positive_class(classes: Sequence[str]) -> str:
    """The class whose sensitivity is reported: ``mel`` for HAM10000, else ``malignant``."""
    return "mel" if "mel" in classes else "malignant"


def _sensitivity(k: int):
    def sens(y, proba):
        value, _ = metrics.sensitivity_at_specificity(y == k, proba[:, k], SPECIFICITY)
        return value
    return sens


def _metric_fns(classes: Sequence[str]) -> dict:
    k = list(classes).index(positive_class(classes))
    return {"balanced_accuracy": metrics.balanced_accuracy, "macro_auc": metrics.macro_auc,
            "sensitivity_at_90_specificity": _sensitivity(k)}


def score_run(run, groups: dict[str, str] | None, *, rounds: int, seed: int = 42,
              parts: Sequence[str] = ("val", "test")) -> dict:
    """Metrics of one run folder: ``{"val": ..., "val_flips": ..., "test": ..., "test_flips":}``.

    Validation holds point estimates (it is what choices are made on); test holds each metric's
    lesion-grouped bootstrap ``{"estimate", "low", "high"}`` (``groups``: image id -> lesion).
    """
    classes = run.classes
    fns = _metric_fns(classes)
    out = {}
    for part in parts:
        for view, prefix in VIEWS.items():
            if f"{prefix}{classes[0]}" not in run.predictions.columns:
                continue  # a run folder from before 4-flip probabilities were stored
            key = part if view == "one view" else f"{part}_flips"
            y, proba = metrics.from_predictions(run.predictions, classes, split=part,
                                                prefix=prefix)
            if part == "val":
                out[key] = {name: float(fn(y, proba)) for name, fn in fns.items()}
                continue
            ids = run.predictions.loc[run.predictions["split"] == part, "image_id"].astype(str)
            table = metrics.bootstrap_table(y, proba, metrics=fns, rounds=rounds, seed=seed,
                                            groups=[groups[i] for i in ids])
            out[key] = {name: {c: float(table.loc[name, c]) for c in ("estimate", "low", "high")}
                        for name in table.index}
    return out


def run_entry(run, groups: dict[str, str], *, rounds: int) -> dict:
    """A run's registry entry: what it is, where it came from, and :func:`score_run`."""
    m = run.manifest
    weights = m.get("weights", {})
    return {
        "run": run.path.name, "task": m["task"], "backbone": m["backbone"],
        "backbone_display": m.get("backbone_display", m["backbone"]), "variant": m["variant"],
        "seed": m.get("seed"), "weights": weights.get("source"),
        "weights_sha256": weights.get("sha256"), "pretrained": bool(m.get("pretrained")),
        "image_size": m["image_size"], "profile": m["profile"], "epochs": m.get("epochs"),
        "planned_epochs": m.get("planned_epochs"), "wall_time_s": m.get("wall_time_s"),
        "peak_memory_mb": m.get("peak_memory_mb"),
        "created": m.get("created"), "provenance": m.get("provenance", {}),
        "n_images": m.get("n_images"), "split_hash": m.get("split_hash"),
        "scores": score_run(run, groups, rounds=rounds),
    }


def config_key(entry: dict) -> str:
    """Runs with the same key differ only in their seed."""
    planned = (entry.get("planned_epochs") or {}).get("finetune")
    size = "x".join(map(str, entry["image_size"]))
    return (f"{entry['task']}|{entry['backbone']}|{entry['variant']}|{entry['weights']}|{size}|"
            f"ft{planned}")


def _estimate(value) -> float:
    return value["estimate"] if isinstance(value, dict) else value


def seed_spread(entries: Sequence[dict]) -> dict:
    """Per configuration: the runs, and each metric's mean, sd, min and max over seeds."""
    configs: dict[str, dict] = {}
    for e in entries:
        c = configs.setdefault(config_key(e), {"runs": [], "seeds": []})
        c["runs"].append(e["run"])
        c["seeds"].append(e["seed"])
    for key, c in configs.items():
        members = [e for e in entries if config_key(e) == key]
        stats = {}
        for part in ("val", "val_flips", "test", "test_flips"):
            for name in ("balanced_accuracy", "macro_auc", "sensitivity_at_90_specificity"):
                values = [_estimate(e["scores"][part][name]) for e in members
                          if part in e["scores"]]
                values = [v for v in values if v is not None and np.isfinite(v)]
                if values:
                    stats.setdefault(part, {})[name] = {
                        "mean": float(np.mean(values)),
                        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                        "min": float(np.min(values)), "max": float(np.max(values)),
                        "n": len(values)}
        c["stats"] = stats
    return configs


def choose(registry: dict, task: str) -> dict:
    """The book's choices for ``task``, from validation metrics alone.

    1. Configuration: among pretrained runs (random initialisation is the control
       experiment), the one with the highest mean validation balanced accuracy over its seeds,
       each configuration scored with its better view.
    2. View: test-time augmentation (4 flips) only if it raises the configuration's mean
       validation balanced accuracy.
    3. Studied run: the configuration's seed with the highest validation balanced accuracy in
       that view (chapters 04-07 evaluate, explain and export it).
    The test split is not read here.
    """
    candidates = []
    for key, c in registry["configs"].items():
        if not key.startswith(f"{task}|"):
            continue
        runs = [e for e in registry["runs"] if e["run"] in c["runs"]]
        if not runs or not runs[0]["pretrained"]:
            continue
        val = c["stats"].get("val", {}).get("balanced_accuracy", {}).get("mean")
        flips = c["stats"].get("val_flips", {}).get("balanced_accuracy", {}).get("mean")
        if val is None:
            continue
        view = "4 flips" if flips is not None and flips > val else "one view"
        candidates.append({"config": key, "view": view, "val_balanced_accuracy": val,
                           "val_balanced_accuracy_4_flips": flips,
                           "score": max(val, flips if flips is not None else -1.0)})
    if not candidates:
        raise ValueError(f"no pretrained {task} run in the registry to choose from")
    best = max(candidates, key=lambda c: (c["score"], c["config"]))
    part = "val_flips" if best["view"] == "4 flips" else "val"
    runs = [e for e in registry["runs"] if e["run"] in registry["configs"][best["config"]]["runs"]]
    studied = max(runs, key=lambda e: (e["scores"][part]["balanced_accuracy"], -e["seed"]))
    return {"config": best["config"], "view": best["view"], "run": studied["run"],
            "candidates": sorted(candidates, key=lambda c: -c["score"]),
            "rule": "highest mean validation balanced accuracy (pretrained configurations); "
                    "4 flips only if they raise it; studied run: best validation seed"}


def studied_run(runs_root: str | Path, task: str) -> Path:
    """The run folder chapters 04-07 study, chosen by :func:`choose` from the validation
    metrics of the run folders themselves (no registry needed; the test split is not read)."""
    from helpers import run_folders

    entries = []
    for folder in run_folders.find_runs(runs_root, task=task):
        run = run_folders.load_run(folder)
        m = run.manifest
        entries.append({"run": folder.name, "task": m["task"], "backbone": m["backbone"],
                        "variant": m["variant"], "weights": m["weights"].get("source"),
                        "pretrained": bool(m.get("pretrained")), "seed": m.get("seed") or 0,
                        "image_size": m["image_size"], "planned_epochs": m.get("planned_epochs"),
                        "scores": score_run(run, None, rounds=0, parts=("val",))})
    if not entries:
        raise FileNotFoundError(f"no complete {task} run folder under "
                                f"{Path(runs_root) / 'models'}: run chapter 03 first")
    registry = {"runs": entries, "configs": seed_spread(entries)}
    return Path(runs_root) / "models" / choose(registry, task)["run"]


def collect(profile: str, *, runs_root: Path | None = None, rounds: int | None = None,
            data_root: Path | None = None, keep_missing: dict | None = None) -> dict:
    """Score every complete run folder of ``profile`` on the current split; the registry dict.

    Runs trained on another split (an older grouping) are listed in ``skipped``, not scored.
    Derived models (``runs/<profile>/derived``: metadata heads, ensembles) are scored the same
    way into ``derived``; they are not candidates for :func:`choose`. ``keep_missing``: an
    earlier registry whose entries this machine has no folder for are kept (see
    :func:`keep_entries`), and so are its chapter times for chapters not executed here.
    """
    import helpers
    from helpers import derived, run_folders, splits

    ctx = helpers.setup("results", profile, data_root=data_root)
    runs_root = Path(runs_root) if runs_root else ctx.runs
    rounds = rounds or ctx.profile.bootstrap_rounds
    tables: dict[str, pd.DataFrame] = {}
    skipped: list[dict] = []

    def score(folders: list[Path], extra: Sequence[str] = ()) -> list[dict]:
        out = []
        for folder in folders:
            run = run_folders.load_run(folder)
            dataset = run.manifest["dataset"]
            if dataset not in tables:
                tables[dataset] = ctx.samples(dataset, split="load")
            table = tables[dataset]
            if run.manifest.get("split_hash") != splits.table_hash(table):
                skipped.append({"run": folder.name, "why": "trained on another split"})
                continue
            groups = dict(zip(table["image_id"].astype(str), table["group"].astype(str)))
            print(f"scoring {folder.name} ({rounds} lesion-bootstrap rounds)", flush=True)
            out.append({**run_entry(run, groups, rounds=rounds),
                        **{k: run.manifest.get(k) for k in extra}})
        return out

    entries = score(run_folders.find_runs(runs_root))
    derived_entries = score(derived.find(runs_root), DERIVED_KEYS)
    registry = {"profile": profile, "collected": datetime.now(timezone.utc).isoformat(
                    timespec="seconds"),
                "bootstrap": {"rounds": rounds, "resampled": "lesion groups", "interval": 0.95},
                "runs": entries, "skipped": skipped, "derived": derived_entries}
    if keep_missing is not None:
        keep_entries(registry, keep_missing)
    registry["configs"] = seed_spread(registry["runs"])
    entries = registry["runs"]
    registry["choices"] = {}
    for task in sorted({e["task"] for e in entries}):
        try:
            registry["choices"][task] = choose(registry, task)
        except ValueError:
            pass
    chapters = {**(keep_missing or {}).get("chapters", {}), **chapter_times(profile)}
    if chapters:
        registry["chapters"] = chapters
    return registry


DERIVED_KEYS = ("inputs", "derived_from", "how")
"""Manifest fields of a derived model copied into its registry entry."""


def keep_entries(registry: dict, earlier: dict) -> list[str]:
    """Copy into ``registry`` the runs and derived models of ``earlier`` it lacks; their names.

    A registry is collected on one machine from the run folders it has; runs trained elsewhere
    (say melanoma10k on a machine with that dataset) would drop out. Kept entries keep their
    scores, commit and machine, and are listed in ``registry["kept"]``.
    """
    kept = []
    for key in ("runs", "derived"):
        have = {e["run"] for e in registry.get(key, [])}
        for e in earlier.get(key, []):
            if e["run"] not in have:
                registry.setdefault(key, []).append(e)
                kept.append(e["run"])
    registry["kept"] = kept
    return kept


def without(registry: dict, names: Sequence[str]) -> dict:
    """A copy of ``registry`` without the runs and derived models named ``names`` (say derived
    models built on a run chapter 09 no longer studies, so that ``--keep-missing`` stops keeping
    them); a name it does not hold is an error."""
    held = {e["run"] for key in ("runs", "derived") for e in registry.get(key, [])}
    unknown = sorted(set(names) - held)
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not in the registry; it holds "
                         f"{', '.join(sorted(held))}")
    return {**registry, **{key: [e for e in registry.get(key, []) if e["run"] not in names]
                           for key in ("runs", "derived")}}


def chapter_times(profile: str) -> dict:
    """Per executed chapter of ``profile``: wall time, peak memory, the run folders' size after
    it, and when, from the book runner's records."""
    from helpers import book

    out = {}
    for record in sorted((book.EXECUTED_DIR / profile).glob("*.json")):
        data = json.loads(record.read_text())
        out[record.stem] = {k: data.get(k) for k in ("wall_time_s", "peak_memory_mb",
                                                     "runs_disk_mb", "finished", "commit")}
    return out


def write(registry: dict) -> Path:
    path = registry_path(registry["profile"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registry, indent=1, sort_keys=False) + "\n")
    return path


# --- rendering ----------------------------------------------------------------------------------

def fmt_ci(value: dict | None, digits: int = 3) -> str:
    """``0.742 [0.703-0.780]`` from a bootstrap entry."""
    if not value or value.get("estimate") is None or not np.isfinite(value["estimate"]):
        return "n/a"
    return (f"{value['estimate']:.{digits}f} [{value['low']:.{digits}f}-"
            f"{value['high']:.{digits}f}]")


def fmt_spread(stat: dict | None, digits: int = 3) -> str:
    """``0.735 ± 0.012 (0.722-0.748, 3 seeds)``, or the single value for one seed."""
    if not stat:
        return "n/a"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f} (1 seed)"
    return (f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f} "
            f"({stat['min']:.{digits}f}-{stat['max']:.{digits}f}, {stat['n']} seeds)")


def _minutes(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _experiment(variant: str) -> str:
    """`` (batch norm frozen)`` for a ``finetune-bn-frozen`` run, else nothing."""
    return " (batch norm frozen)" if variant.endswith("-bn-frozen") else ""


def _model(entry: dict) -> str:
    weights = "ImageNet" if entry["pretrained"] else "random init"
    return f"{entry['backbone_display']}, {weights}"


def runs_frame(registry: dict, task: str | None = None) -> pd.DataFrame:
    """Every run as a row: model, training, seed, validation and test metrics with intervals."""
    rows = []
    for e in registry["runs"]:
        if task and e["task"] != task:
            continue
        s = e["scores"]
        epochs = e.get("epochs") or {}
        training = (f"fine-tuned{_experiment(e['variant'])}, best epoch "
                    f"{epochs.get('finetune_best')} of {epochs.get('finetune')}"
                    if "finetune" in e["variant"] else "frozen + head")
        rows.append({
            "task": e["task"], "model": _model(e), "training": training, "seed": e["seed"],
            "val bal. acc. (1 view / 4 flips)":
                f"{s['val']['balanced_accuracy']:.3f} / "
                f"{s.get('val_flips', {}).get('balanced_accuracy', float('nan')):.3f}",
            "test bal. acc., 1 view": fmt_ci(s["test"]["balanced_accuracy"]),
            "test bal. acc., 4 flips": fmt_ci(s.get("test_flips", {}).get("balanced_accuracy")),
            "test ROC-AUC, 1 view": fmt_ci(s["test"]["macro_auc"]),
            "test ROC-AUC, 4 flips": fmt_ci(s.get("test_flips", {}).get("macro_auc")),
            "test sens. at 90% spec. (mel / malignant)":
                fmt_ci(s["test"]["sensitivity_at_90_specificity"]),
            "wall time": _minutes(e.get("wall_time_s")), "commit": e["provenance"].get("commit"),
        })
    return pd.DataFrame(rows)


def configs_frame(registry: dict, task: str | None = None) -> pd.DataFrame:
    """Every configuration as a row, as :func:`choose` saw it: the validation means it ranked
    by (each view), then the test spread over its seeds. Rows are in the order of the choice."""
    rows = []
    for key, c in registry["configs"].items():
        entries = [e for e in registry["runs"] if e["run"] in c["runs"]]
        if not entries or (task and entries[0]["task"] != task):
            continue
        e, stats = entries[0], c["stats"]
        choice = registry.get("choices", {}).get(e["task"], {})
        val = stats.get("val", {}).get("balanced_accuracy")
        flips = stats.get("val_flips", {}).get("balanced_accuracy")
        rows.append({
            "task": e["task"], "model": _model(e),
            "training": (f"fine-tuned{_experiment(e['variant'])}"
                         if "finetune" in e["variant"] else "frozen + head"),
            "seeds": len(c["runs"]),
            "chosen": "yes" if choice.get("config") == key else "",
            "val bal. acc., 1 view": fmt_spread(val),
            "val bal. acc., 4 flips": fmt_spread(flips),
            "test bal. acc., 1 view": fmt_spread(stats.get("test", {}).get("balanced_accuracy")),
            "test ROC-AUC, 1 view": fmt_spread(stats.get("test", {}).get("macro_auc")),
            "_rank": max(val["mean"] if val else -1.0, flips["mean"] if flips else -1.0),
        })
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    return (frame.sort_values(["task", "_rank"], ascending=[True, False])
            .drop(columns="_rank").reset_index(drop=True))


def headline_frame(registry: dict) -> pd.DataFrame:
    """Per task: the configuration chosen on validation, its studied run and its seed spread."""
    rows = []
    for task, choice in registry.get("choices", {}).items():
        entry = next(e for e in registry["runs"] if e["run"] == choice["run"])
        stats = registry["configs"][choice["config"]]["stats"]
        part = "test_flips" if choice["view"] == "4 flips" else "test"
        s = entry["scores"][part]
        rows.append({
            "task": task, "model (chosen on validation)": _model(entry),
            "training": (f"fine-tuned{_experiment(entry['variant'])}"
                         if "finetune" in entry["variant"] else "frozen + head"),
            "view": choice["view"], "run": f"seed {entry['seed']}",
            "test balanced accuracy [95% CI]": fmt_ci(s["balanced_accuracy"]),
            "test ROC-AUC [95% CI]": fmt_ci(s["macro_auc"]),
            "balanced accuracy over seeds": fmt_spread(stats[part]["balanced_accuracy"]),
            "ROC-AUC over seeds": fmt_spread(stats[part]["macro_auc"]),
            "wall time": _minutes(entry.get("wall_time_s")),
        })
    return pd.DataFrame(rows)


def derived_frame(registry: dict, task: str | None = None) -> pd.DataFrame:
    """Every derived model (metadata head, ensemble...) as a row, with intervals."""
    rows = []
    for e in registry.get("derived", []):
        if task and e["task"] != task:
            continue
        s = e["scores"]
        rows.append({
            "task": e["task"], "model": e["variant"], "inputs": e.get("inputs"),
            "from": ", ".join(dict.fromkeys(e.get("derived_from") or [])),
            "val bal. acc. (1 view / 4 flips)":
                f"{s['val']['balanced_accuracy']:.3f} / "
                f"{s.get('val_flips', {}).get('balanced_accuracy', float('nan')):.3f}",
            "test bal. acc., 1 view": fmt_ci(s["test"]["balanced_accuracy"]),
            "test bal. acc., 4 flips": fmt_ci(s.get("test_flips", {}).get("balanced_accuracy")),
            "test ROC-AUC, 4 flips": fmt_ci(s.get("test_flips", {}).get("macro_auc")),
            "commit": e["provenance"].get("commit"),
        })
    return pd.DataFrame(rows)


def resources_frame(registry: dict) -> pd.DataFrame:
    """What the profile cost where it was measured: the chapters the book runner executed
    (wall time, peak memory of runner plus kernel, the run folders' size afterwards) and the
    training runs (wall time, the training process's peak memory). "not recorded" where a run
    predates the measurement; nothing here is estimated."""
    chapters = registry.get("chapters", {})
    names = sorted({key.split("__")[0] for key in chapters})
    runs = registry["runs"]
    return pd.DataFrame([{
        "measured": "chapters executed by the book runner",
        "how many": f"{len(names)} of {len(CHAPTERS)}: {', '.join(n[:2] for n in names) or '-'}",
        "total time": _minutes(sum(c.get("wall_time_s") or 0 for c in chapters.values()) or None),
        "peak memory (GiB)": largest_gib(c.get("peak_memory_mb") for c in chapters.values()),
        "run folders on disk (GiB)": largest_gib(c.get("runs_disk_mb")
                                                 for c in chapters.values()),
    }, {
        "measured": "training runs (helpers.training, as chapter 03 trains them)",
        "how many": f"{len(runs)} runs, {sum(e.get('peak_memory_mb') is not None for e in runs)}"
                    f" with memory recorded",
        "total time": _minutes(sum(e.get("wall_time_s") or 0 for e in runs) or None),
        "peak memory (GiB)": largest_gib(e.get("peak_memory_mb") for e in runs),
        "run folders on disk (GiB)": "",
    }])


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no index)."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def provenance_line(registry: dict) -> str:
    """Where the numbers come from, in one sentence."""
    commits = sorted({e["provenance"].get("commit", "unknown") for e in registry["runs"]})
    cpus = sorted({f"{e['provenance'].get('cpu', '?')} ({e['provenance'].get('cores', '?')} "
                   f"cores)" for e in registry["runs"]})
    b = registry["bootstrap"]
    return (f"Profile `{registry['profile']}`, {len(registry['runs'])} runs, commits "
            f"{', '.join(commits)}, on {', '.join(cpus)}; intervals: {b['rounds']} bootstrap "
            f"rounds resampling {b['resampled']} (95%); collected {registry['collected']}.")


BLOCK = re.compile(r"(<!-- results:(?P<profile>\w+):(?P<what>\w+) -->\n)(?P<body>.*?)"
                   r"(<!-- /results -->)", re.S)


def render(registry: dict, what: str) -> str:
    """The markdown of one generated block: ``headline``, ``configs``, ``runs``, ``derived``,
    ``resources`` or ``provenance``."""
    if what == "headline":
        return markdown_table(headline_frame(registry))
    if what == "runs":
        return markdown_table(runs_frame(registry))
    if what == "configs":
        return markdown_table(configs_frame(registry))
    if what == "resources":
        return markdown_table(resources_frame(registry))
    if what == "derived":
        frame = derived_frame(registry)
        return markdown_table(frame) if len(frame) else "No derived models yet (chapter 09)."
    if what == "provenance":
        return provenance_line(registry)
    raise ValueError(f"unknown results block {what!r}: use headline, configs, runs, derived, "
                     f"resources or provenance")


def render_blocks(text: str, registries: dict[str, dict] | None = None) -> str:
    """``text`` with every ``<!-- results:PROFILE:WHAT -->`` block regenerated."""
    registries = {} if registries is None else registries

    def fill(match: re.Match) -> str:
        profile = match["profile"]
        if profile not in registries:
            registries[profile] = load(profile)
        return f"{match.group(1)}{render(registries[profile], match['what'])}\n{match.group(5)}"

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, choices=config.profile_names())
    parser.add_argument("--runs", type=Path, default=None,
                        help="runs folder (default: the profile's, book/runs/<profile>)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="bootstrap rounds (default: the profile's bootstrap_rounds)")
    parser.add_argument("--render", action="store_true",
                        help="also regenerate the results blocks of README.md")
    parser.add_argument("--keep-missing", action="store_true",
                        help="keep the committed registry's entries for runs this machine has "
                             "no folder for (e.g. melanoma10k runs trained elsewhere)")
    parser.add_argument("--drop", nargs="+", default=[], metavar="RUN",
                        help="with --keep-missing: entries of the committed registry not to keep "
                             "(e.g. derived models chapter 09 no longer builds)")
    args = parser.parse_args(argv)
    if args.drop and not args.keep_missing:
        parser.error("--drop only applies with --keep-missing")
    earlier = load(args.profile) if args.keep_missing and registry_path(
        args.profile).exists() else None
    if earlier and args.drop:
        try:
            earlier = without(earlier, args.drop)
        except ValueError as err:
            parser.error(str(err))
    registry = collect(args.profile, runs_root=args.runs, rounds=args.rounds,
                       keep_missing=earlier)
    if not registry["runs"]:
        parser.error(f"no finished run folder of profile {args.profile} on the current split "
                     f"(skipped: {registry['skipped']}); train one first (chapter 03 or "
                     f"python -m helpers.training)")
    path = write(registry)
    print(f"wrote {path}: {len(registry['runs'])} runs ({len(registry.get('kept', []))} kept "
          f"from the earlier registry), {len(registry['derived'])} derived models, "
          f"{len(registry['skipped'])} skipped")
    print(markdown_table(headline_frame(registry)))
    if args.render:
        readme = config.REPO_ROOT / "README.md"
        readme.write_text(render_blocks(readme.read_text(), {args.profile: registry}))
        print(f"rendered the results blocks of {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
