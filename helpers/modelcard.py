"""The model card: what a model is for, how good it measured, and where it fails, in one file.

Generated, never typed: :func:`render` reads a run folder (``manifest.json``, ``metrics.json``)
and what the chapter "Before a model meets a patient" measured and saved beside the model:

==================  =========================================================================
evaluation.json     test metrics with lesion-grouped bootstrap 95% intervals (:func:`measure`)
referral.json       the referral rule and its operating point (:mod:`helpers.referral`)
ood.json            the out-of-distribution gate and how it separated (:mod:`helpers.ood`)
subgroups.csv       metrics per age band, sex, site and source (:mod:`helpers.subgroups`)
artefacts.csv       the artefact stress test (:mod:`helpers.artefacts`)
==================  =========================================================================

The card follows the Hugging Face model card format: a YAML block with a ``model-index``
(machine-readable results), then markdown sections. Anything not measured yet is said to be
missing, not left out. :func:`write` saves ``model_card.md`` in the run folder; :func:`ship`
copies the card and the files the prediction command needs beside an export (chapter 07's
TFLite folder), so the card travels with every exported model. Educational tool only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from helpers import DISCLAIMER, metrics

CARD_FILE = "model_card.md"
EVALUATION_FILE = "evaluation.json"
SUBGROUPS_FILE = "subgroups.csv"
ARTEFACTS_FILE = "artefacts.csv"
SHIPPED = (CARD_FILE, EVALUATION_FILE, "referral.json", "ood.json")
"""Files :func:`ship` copies beside an export (the gate's arrays need the Keras model's
features, which a TFLite export does not output, so ``ood.npz`` stays with the run)."""

DDI = ("Daneshjou et al., 'Disparities in dermatology AI performance on a diverse, curated "
       "clinical image set', Science Advances 8(32), eabq6147 (2022): a HAM10000-trained "
       "model's ROC-AUC was 0.72 (95% CI 0.63-0.79) on Fitzpatrick skin types I-II and 0.57 "
       "(0.48-0.67) on types V-VI of the DDI images.")


# --- measuring the headline numbers -----------------------------------------------------------

def measure(y_true, proba, classes: Sequence[str], *, groups=None, rounds: int = 1000,
            seed: int = 42, split: str = "test", profile: str | None = None) -> dict:
    """Headline test metrics with lesion-grouped bootstrap 95% intervals, as saved in
    ``evaluation.json``: balanced accuracy, accuracy, macro ROC-AUC, melanoma sensitivity."""
    y_true, proba = metrics._check(y_true, proba)
    fns = {"balanced_accuracy": metrics.balanced_accuracy, "accuracy": metrics.accuracy,
           "macro_auc": metrics.macro_auc}
    if "mel" in classes:
        mel = list(classes).index("mel")
        fns["mel_sensitivity"] = lambda y, p: (float((p[y == mel].argmax(1) == mel).mean())
                                               if (y == mel).any() else float("nan"))
    table = metrics.bootstrap_table(y_true, proba, metrics=fns, rounds=rounds, seed=seed,
                                    groups=groups)
    return {"split": split, "profile": profile, "n_images": int(len(y_true)),
            "n_lesions": int(len(set(groups))) if groups is not None else None,
            "bootstrap_rounds": rounds, "interval": "95% percentile bootstrap over lesions",
            "metrics": {name: {k: (None if pd.isna(row[k]) else float(row[k]))
                               for k in ("estimate", "low", "high")}
                        for name, row in table.iterrows()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_json(folder: str | Path, name: str, data: dict) -> Path:
    path = Path(folder) / name
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def quality(folder: str | Path) -> dict | None:
    """The measured balanced accuracy with its interval, from ``evaluation.json`` beside a model
    (what the prediction command and the web app show), or None when never measured."""
    data = _read_json(Path(folder) / EVALUATION_FILE)
    if not data or "balanced_accuracy" not in data.get("metrics", {}):
        return None
    ba = data["metrics"]["balanced_accuracy"]
    return {"balanced_accuracy": ba["estimate"], "low": ba["low"], "high": ba["high"],
            "split": data.get("split"), "n_images": data.get("n_images"),
            "n_lesions": data.get("n_lesions"), "profile": data.get("profile"),
            "interval": data.get("interval")}


# --- rendering --------------------------------------------------------------------------------

def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else \
        f"{value:.{digits}f}"


def _ci(row: dict | None, digits: int = 3) -> str:
    if not row or row.get("estimate") is None:
        return "not measured"
    if row.get("low") is None:
        return _f(row["estimate"], digits)
    return f"{_f(row['estimate'], digits)} (95% CI {_f(row['low'], digits)}-" \
           f"{_f(row['high'], digits)})"


def _table(frame: pd.DataFrame) -> str:
    """A pandas table as a GitHub markdown table (no extra dependency)."""
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join([head, rule, *body])


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    return str(value).replace("|", "/")


def model_index(name: str, manifest: dict, evaluation: dict | None) -> list[dict]:
    """The ``model-index`` entry of the YAML block (Hugging Face's results format)."""
    results = []
    if evaluation:
        labels = {"balanced_accuracy": "Balanced accuracy", "accuracy": "Accuracy",
                  "macro_auc": "Macro one-vs-rest ROC-AUC",
                  "mel_sensitivity": "Melanoma sensitivity (argmax)"}
        entries = []
        for key, row in evaluation["metrics"].items():
            if row.get("estimate") is None:
                continue
            entries.append({"type": key, "value": round(row["estimate"], 4),
                            "name": f"{labels.get(key, key)} (95% CI {_f(row['low'])}-"
                                    f"{_f(row['high'])}, lesion-grouped bootstrap)"})
        results.append({
            "task": {"type": "image-classification",
                     "name": f"Skin lesion classification ({len(manifest['classes'])} classes)"},
            "dataset": {"type": manifest.get("dataset", "ham10000"),
                        "name": f"{manifest.get('dataset', 'HAM10000').upper()} lesion-grouped "
                                f"{evaluation.get('split', 'test')} split (profile "
                                f"{manifest.get('profile')})",
                        "split": evaluation.get("split", "test")},
            "metrics": entries})
    return [{"name": name, "results": results}]


def render(run_dir: str | Path, *, name: str | None = None) -> str:
    """The model card of a run folder as markdown with a YAML front-matter block."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    if manifest is None:
        raise FileNotFoundError(f"{run_dir / 'manifest.json'} not found: not a run folder")
    run_metrics = _read_json(run_dir / "metrics.json") or {}
    evaluation = _read_json(run_dir / EVALUATION_FILE)
    referral = _read_json(run_dir / "referral.json")
    ood = _read_json(run_dir / "ood.json")
    subgroups = _read_csv(run_dir / SUBGROUPS_FILE)
    artefacts = _read_csv(run_dir / ARTEFACTS_FILE)
    name = name or run_dir.name
    classes = list(manifest["classes"])
    weights = manifest.get("weights", {})
    front = {
        "license": "cc-by-nc-4.0",
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": ["dermatology", "skin-lesion", "dermoscopy", "educational",
                 "not-a-medical-device"],
        "datasets": [manifest.get("dataset", "ham10000")],
        "metrics": ["balanced_accuracy", "accuracy", "roc_auc"],
        "model-index": model_index(name, manifest, evaluation),
    }
    size = "x".join(map(str, manifest.get("image_size", [])))
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# Model card: {name}", "",
             f"> **{DISCLAIMER}**", "",
             "## Model details", "",
             f"- Architecture: {manifest.get('backbone_display', manifest.get('backbone'))} "
             f"backbone, global average pooling, dropout, softmax head over "
             f"{len(classes)} classes ({', '.join(classes)}).",
             f"- Variant: {manifest.get('variant')}; starting weights: "
             f"{weights.get('source')} ({weights.get('file') or 'random initialisation'}).",
             f"- Input: RGB {size} (height x width), values 0-255; the backbone's "
             f"normalisation is inside the model.",
             f"- Trained by The Skin Lesion Book (chapter 03), profile "
             f"`{manifest.get('profile')}`, seed {manifest.get('seed')}, "
             f"{manifest.get('wall_time_s')} s of training; created {manifest.get('created')}.",
             f"- Card generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
             f"from the run folder `{run_dir.name}`.", "",
             "## Intended use", "",
             "Teaching: showing how a skin-lesion classifier is built, evaluated, explained and "
             "exported, and how it fails. **It is not a diagnosis and must not be used to "
             "decide whether to see a doctor, to treat, or to reassure anyone.** A person "
             "worried about a skin lesion should see a doctor, whatever this model says.", "",
             "Out of scope: clinical use of any kind; photos that are not dermoscopic images "
             "of a skin lesion (phone snapshots without a dermatoscope, other body images, "
             "anything else); skin types and lesion types absent from the training data.", "",
             "## Training data", "",
             "HAM10000 (Tschandl, Rosendahl and Kittler, Sci. Data 5, 180161, 2018; "
             "CC BY-NC 4.0): dermoscopic images of pigmented lesions from Vienna and "
             "Queensland. Split by lesion (photos of one lesion never straddle splits): "
             + ", ".join(f"{k} {v}" for k, v in manifest.get("n_images", {}).items())
             + " images in this profile.", "",
             "## Metrics", ""]
    if evaluation:
        m = evaluation["metrics"]
        lines += [f"On the lesion-grouped **{evaluation['split']}** split "
                  f"({evaluation['n_images']} "
                  f"images, {evaluation.get('n_lesions')} lesions; "
                  f"{evaluation['interval']}, {evaluation['bootstrap_rounds']} rounds):", "",
                  f"- balanced accuracy: {_ci(m.get('balanced_accuracy'))}",
                  f"- accuracy: {_ci(m.get('accuracy'))}",
                  f"- macro one-vs-rest ROC-AUC: {_ci(m.get('macro_auc'))}",
                  f"- melanoma sensitivity (melanomas called melanoma): "
                  f"{_ci(m.get('mel_sensitivity'))}", ""]
    else:
        test = run_metrics.get("test", {})
        lines += [f"Not measured with intervals yet (run the chapter 'Before a model meets a "
                  f"patient'). From training: test balanced accuracy "
                  f"{_f(test.get('balanced_accuracy'))}, without an interval.", ""]
    lines += ["## Subgroups", ""]
    if subgroups is not None:
        shown = subgroups.copy()
        lines += ["Balanced accuracy and melanoma sensitivity per group of the test split "
                  "(lesion-grouped bootstrap 95% intervals; 'too few to tell' below the "
                  "minimum group size):", "", _table(shown), ""]
    else:
        lines += ["Not measured yet.", ""]
    lines += ["What the data cannot show: HAM10000 has no skin-type (Fitzpatrick) labels and its "
              "patients are mostly light-skinned, so nothing here says how the model does on "
              f"dark skin. Published evidence suggests it would do worse: {DDI}", "",
              "## Out-of-distribution behaviour", ""]
    if ood:
        measured = ood.get("measured", {})
        thresholds = ood.get("thresholds", {})
        lines += [f"A two-part Mahalanobis gate, fitted on {ood.get('n_train')} training images, "
                  f"refuses an image when its pooled features are farther than "
                  f"{_f(thresholds.get('features'), 1)} from every class mean (shared "
                  f"Ledoit-Wolf covariance) or its appearance statistics (colour, texture, "
                  f"structure) are farther than {_f(thresholds.get('appearance'), 1)} from "
                  f"those of the training photos. The thresholds let "
                  f"{ood['validation_recall']:.0%} of the {ood.get('n_validation')} validation "
                  f"lesions through. Refused images get 'this does not look like a dermoscopic "
                  f"image of a skin lesion' instead of a class.", ""]
        if measured:
            rows = pd.DataFrame(measured.get("acceptance", []))
            if not rows.empty:
                lines += ["Share of each test set the gate accepts:", "", _table(rows), ""]
            if "auroc" in measured:
                lines += [f"AUROC, test lesions against all out-of-distribution inputs: "
                          f"{_f(measured['auroc'])}.", ""]
        lines += ["The gate needs the Keras model's features: exported TFLite models have no "
                  "features output, so they run without it.", ""]
    else:
        lines += ["No out-of-distribution gate fitted yet: the model answers one of its "
                  "classes for any input, noise included.", ""]
    lines += ["## Referral operating point", ""]
    if referral:
        lines += [f"Rule chosen on {referral['n_validation']} validation images only: "
                  f"temperature {referral['temperature']:.3f}; refer ('the model is unsure: see "
                  f"a doctor') when the top probability is below "
                  f"{referral['unsure_threshold']:.3f} (refers "
                  f"{referral['referral_share']:.0%} of validation images); stronger advice "
                  f"when p({' + '.join(referral['malignant_classes'])}) reaches "
                  f"{referral['malignant_threshold']:.3f} (catches "
                  f"{referral['malignant_sensitivity']:.0%} of validation malignant lesions).",
                  ""]
        test = referral.get("measured", {}).get("test")
        if test:
            rows = pd.DataFrame([{"on the test split": k, "estimate (95% CI)": _ci(v)}
                                 for k, v in test.items()])
            lines += [_table(rows), ""]
    else:
        lines += ["Not measured yet: the model never says it is unsure.", ""]
    lines += ["## Artefacts", ""]
    if artefacts is not None:
        lines += ["Synthetic artefacts drawn on test images (ink marks, a ruler, hair, a colour "
                  "cast, blur); what changed against the clean images:", "", _table(artefacts),
                  "", "Published: surgical ink marks raised a CNN's false-positive rate on "
                  "benign naevi by about 40% (Winkler et al., JAMA Dermatology 155(10), "
                  "1135-1141, 2019).", ""]
    else:
        lines += ["Not measured yet.", ""]
    lines += ["## Limitations", "",
              "- Trained and tested on one dataset of dermoscopic images; performance on other "
              "cameras, clinics and populations is unknown and likely lower.",
              "- No skin-type labels: fairness across skin tones cannot be measured here.",
              "- Seven lesion types only: any other skin condition is forced into one of them.",
              "- The intervals are about this test split; the choice of training budget and "
              "model was made by people who had seen earlier test scores (see chapter 03).",
              "- The out-of-distribution gate and the referral thresholds were set on "
              "validation images of the same dataset; new kinds of images can fool both.", "",
              "## How to use", "",
              "```bash",
              f"python -m helpers.predict --model {run_dir.name}/model.keras photo.jpg",
              f"python -m helpers.webapp --model {run_dir.name}/model.keras",
              "```", "",
              DISCLAIMER, ""]
    return "\n".join(lines)


def write(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Render the card of ``run_dir`` and save it as ``model_card.md`` (in ``out_dir`` if
    given, else in the run folder)."""
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CARD_FILE
    path.write_text(render(run_dir), encoding="utf-8")
    return path


def ship(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """The card (re-rendered now) and the measured files beside an export in ``out_dir``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    shipped = [write(run_dir, out_dir)]
    for name in SHIPPED[1:]:
        if (run_dir / name).is_file() and run_dir.resolve() != out_dir.resolve():
            shipped.append(Path(shutil.copy2(run_dir / name, out_dir / name)))
    return shipped


def front_matter(text: str) -> dict:
    """The YAML block at the top of a model card, parsed."""
    if not text.startswith("---\n"):
        raise ValueError("a model card starts with a '---' YAML block")
    block = text[4:text.index("\n---", 4)]
    return yaml.safe_load(block)
