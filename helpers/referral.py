"""Referral (selective prediction): the model answers only when it is sure, and refers the rest.

A classifier that must answer every image is wrong on its hardest cases. A *selective* one
ranks images by how sure it is and refers the least sure ones to a doctor; the cases it keeps
are then answered more accurately. This module measures that trade-off and fixes the rule:

- :func:`confidence`: how sure the model is about one image (the top class probability);
- :func:`risk_coverage`: the share referred against the balanced accuracy, accuracy and
  melanoma sensitivity of the images the model keeps, at every referral share;
- :func:`aurc`: the area under the risk-coverage curve (Geifman et al., 2019), one number per
  confidence score: lower is better, the overall error rate is what random referral gets;
- thresholds chosen on *validation* only: :func:`threshold_for_share` (refer a given share),
  :func:`threshold_for_accuracy` (the fewest referrals that reach an accuracy),
  :func:`threshold_for_sensitivity` (a malignant score above which to advise a doctor);
- :class:`ReferralPolicy`: the rule the prediction command and the web app apply (a temperature
  and two thresholds, saved as ``referral.json`` in the run folder), and :func:`advise`, the
  advice for one image.

Every function takes plain arrays as in :mod:`helpers.metrics`. Educational tool only: a
"confident" answer is not a diagnosis, and referral advice is no substitute for a doctor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import metrics

POLICY_FILE = "referral.json"
"""Where a run folder (or an export folder) keeps its :class:`ReferralPolicy`."""
MALIGNANT = ("akiec", "bcc", "mel")
"""HAM10000's malignant classes (actinic keratosis / intraepithelial carcinoma, basal cell
carcinoma, melanoma): the ones whose high score triggers the stronger advice."""

LEVELS = ("not_a_lesion", "see_a_doctor_soon", "unsure", "no_flag")
"""Advice levels of :func:`advise`, most to least urgent."""
MESSAGES = {
    "not_a_lesion": "This does not look like a dermoscopic image of a skin lesion, so the model "
                    "gives no answer for it. If you are worried about a skin lesion, see a "
                    "doctor.",
    "see_a_doctor_soon": "A malignant type scores high ({which}). Please have this lesion "
                         "examined by a doctor: further medical evaluation is recommended.",
    "unsure": "The model is unsure about this image (confidence {confidence} is below its "
              "referral threshold {threshold}): see a doctor.",
    "no_flag": "The model is fairly sure and no malignant type scores high. This is not a "
               "diagnosis: see a doctor if the lesion changes, bleeds or worries you.",
}


# --- how sure is the model? ------------------------------------------------------------------

def confidence(proba) -> np.ndarray:
    """The probability of the predicted class, one per row (the "maximum softmax probability")."""
    return np.asarray(proba, dtype=float).max(axis=1)


def _order(conf) -> np.ndarray:
    """Row indices from most to least confident (stable: ties keep their row order)."""
    return np.argsort(-np.asarray(conf, dtype=float), kind="stable")


def mel_recall(y_true, proba, mel: int) -> float:
    """The share of melanomas (class index ``mel``) predicted as melanoma; NaN without any."""
    y_true = np.asarray(y_true)
    positive = y_true == mel
    if not positive.any():
        return float("nan")
    return float((np.asarray(proba).argmax(1)[positive] == mel).mean())


def kept_metrics(y_true, proba, keep, *, mel: int | None = None) -> dict[str, float]:
    """Metrics of the images the model keeps (``keep`` is a boolean mask)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=float)
    keep = np.asarray(keep, dtype=bool)
    n = int(keep.sum())
    out = {"referred": float(1 - keep.mean()) if len(keep) else float("nan"), "kept": n,
           "accuracy": metrics.accuracy(y_true[keep], proba[keep]) if n else float("nan"),
           "balanced_accuracy": (metrics.balanced_accuracy(y_true[keep], proba[keep])
                                 if n else float("nan"))}
    if mel is not None:
        out["mel_sensitivity"] = mel_recall(y_true[keep], proba[keep], mel)
    return out


def risk_coverage(y_true, proba, conf=None, *, mel: int | None = None,
                  shares: Sequence[float] | None = None) -> pd.DataFrame:
    """The referral curve: for each share referred, the metrics of the images kept.

    The least confident ``round(share * N)`` images are referred (``conf`` defaults to
    :func:`confidence`). Returns one row per share with ``referred`` (the share actually
    referred), ``kept``, ``accuracy``, ``balanced_accuracy`` and, given the melanoma class
    index ``mel``, ``mel_sensitivity`` (melanomas kept that are called melanoma).
    """
    y_true, proba = metrics._check(y_true, proba)
    conf = confidence(proba) if conf is None else np.asarray(conf, dtype=float)
    shares = np.round(np.arange(0, 0.91, 0.05), 2) if shares is None else np.asarray(shares)
    order = _order(conf)
    rows = []
    for share in shares:
        n_keep = len(y_true) - int(round(share * len(y_true)))
        keep = np.zeros(len(y_true), bool)
        keep[order[:n_keep]] = True
        rows.append({"target": float(share), **kept_metrics(y_true, proba, keep, mel=mel)})
    return pd.DataFrame(rows)


def aurc(y_true, proba, conf=None) -> float:
    """Area under the risk-coverage curve: the mean error rate of the ``k`` most confident
    images over every ``k`` from 1 to N (Geifman, Uziel and El-Yaniv, ICLR 2019).

    Lower is better. A confidence that carries no information scores about the overall error
    rate; a perfect one (every error less confident than every right answer) scores
    :func:`optimal_aurc`.
    """
    y_true, proba = metrics._check(y_true, proba)
    if len(y_true) == 0:
        return float("nan")
    conf = confidence(proba) if conf is None else np.asarray(conf, dtype=float)
    wrong = (proba.argmax(1) != y_true)[_order(conf)]
    return float(np.mean(np.cumsum(wrong) / np.arange(1, len(wrong) + 1)))


def optimal_aurc(y_true, proba) -> float:
    """The AURC of a confidence that ranks every right answer above every error."""
    y_true, proba = metrics._check(y_true, proba)
    right = proba.argmax(1) == y_true
    return aurc(y_true, proba, conf=right.astype(float))


# --- thresholds, chosen on validation ---------------------------------------------------------

def threshold_for_share(conf_val, share: float) -> float:
    """The confidence below which ``share`` of the validation images fall (they are referred).

    Refer an image when its confidence is *below* the returned threshold. Sorting the
    validation confidences, the threshold is the ``ceil(share * N)``-th smallest value, so
    exactly that many validation images are referred when there are no ties.
    """
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    conf_val = np.sort(np.asarray(conf_val, dtype=float))
    if len(conf_val) == 0:
        raise ValueError("no validation confidences to choose a threshold from")
    return float(conf_val[int(np.ceil(share * len(conf_val)))])


def threshold_for_accuracy(y_val, proba_val, conf_val=None, *, target: float,
                           min_kept: int = 10) -> float | None:
    """The lowest confidence threshold whose kept validation images reach ``target`` accuracy.

    Candidates are the validation confidences in increasing order (each refers one more
    image); the first whose kept images (at least ``min_kept``) are at least ``target``
    accurate is returned. ``None`` when no threshold reaches it.
    """
    y_val, proba_val = metrics._check(y_val, proba_val)
    conf_val = confidence(proba_val) if conf_val is None else np.asarray(conf_val, dtype=float)
    order = np.argsort(conf_val, kind="stable")          # least confident first
    right = (proba_val.argmax(1) == y_val)[order]
    sorted_conf = conf_val[order]
    n = len(y_val)
    # kept when conf >= sorted_conf[i]: rows i.. (ties: the first of equal values keeps them all)
    kept_right = np.cumsum(right[::-1])[::-1]
    for i in range(n):
        if i > 0 and sorted_conf[i] == sorted_conf[i - 1]:
            continue
        kept = n - i
        if kept < min_kept:
            break
        if kept_right[i] / kept >= target:
            return float(sorted_conf[i])
    return None


def threshold_for_sensitivity(positive, score, target: float) -> float:
    """The highest threshold whose rule ``score >= threshold`` catches ``target`` of positives.

    With the positives' scores sorted from high to low, it is the ``ceil(target * P)``-th
    score: at least that share of validation positives is at or above it.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    positive = np.asarray(positive, dtype=bool)
    pos_scores = np.sort(np.asarray(score, dtype=float)[positive])[::-1]
    if len(pos_scores) == 0:
        raise ValueError("no positive validation images to choose a threshold from")
    return float(pos_scores[int(np.ceil(target * len(pos_scores))) - 1])


# --- the rule the app applies ----------------------------------------------------------------

@dataclass
class ReferralPolicy:
    """When the model refers: a temperature and two thresholds, all chosen on validation.

    ``unsure_threshold``: refer ("the model is unsure: see a doctor") when the top class
    probability, after temperature scaling, is below it. ``malignant_threshold``: give the
    stronger advice when the summed probability of the malignant classes reaches it.
    """

    classes: list[str]
    temperature: float
    unsure_threshold: float
    malignant_threshold: float
    malignant_classes: list[str] = field(default_factory=lambda: list(MALIGNANT))
    referral_share: float = 0.35
    malignant_sensitivity: float = 0.90
    chosen_on: str = "validation"
    n_validation: int = 0
    probabilities: str = "one view (p_<class> columns of predictions.csv)"
    measured: dict = field(default_factory=dict)
    """Results measured by the chapter (validation and test operating points), for the card."""

    def scaled(self, proba) -> np.ndarray:
        """Probabilities after temperature scaling (same argmax, honest confidence)."""
        return metrics.apply_temperature(np.atleast_2d(proba), self.temperature)

    def malignant_score(self, proba) -> np.ndarray:
        return metrics.class_score(self.scaled(proba), self.classes,
                                   [c for c in self.malignant_classes if c in self.classes])

    def refer(self, proba) -> np.ndarray:
        """True where the model refers for being unsure."""
        return confidence(self.scaled(proba)) < self.unsure_threshold

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / POLICY_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=_jsonable) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> ReferralPolicy:
        path = Path(folder_or_file)
        path = path / POLICY_FILE if path.is_dir() else path
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def fit_policy(y_val, proba_val, classes: Sequence[str], *, referral_share: float = 0.35,
               malignant_sensitivity: float = 0.90,
               malignant_classes: Sequence[str] = MALIGNANT) -> ReferralPolicy:
    """Choose the policy on validation predictions only.

    1. a temperature minimising the validation log loss (:func:`helpers.metrics.fit_temperature`);
    2. the confidence threshold that refers ``referral_share`` of validation images;
    3. the malignant-score threshold that keeps ``malignant_sensitivity`` of the validation
       malignant lesions above it.
    """
    y_val, proba_val = metrics._check(y_val, proba_val)
    classes = list(classes)
    temperature = metrics.fit_temperature(y_val, proba_val)
    scaled = metrics.apply_temperature(proba_val, temperature)
    members = [c for c in malignant_classes if c in classes]
    positive = np.isin(np.array(classes)[y_val], members)
    return ReferralPolicy(
        classes=classes, temperature=temperature,
        unsure_threshold=threshold_for_share(confidence(scaled), referral_share),
        malignant_threshold=threshold_for_sensitivity(
            positive, metrics.class_score(scaled, classes, members), malignant_sensitivity),
        malignant_classes=members, referral_share=referral_share,
        malignant_sensitivity=malignant_sensitivity, n_validation=int(len(y_val)))


def operating_point(policy: ReferralPolicy, y_true, proba, *, groups=None, rounds: int = 1000,
                    seed: int = 42) -> pd.DataFrame:
    """The policy applied to one split, with lesion-grouped bootstrap 95% intervals.

    Rows: the share referred for being unsure, accuracy, balanced accuracy and melanoma
    sensitivity of the images kept, and the sensitivity and specificity of the malignant
    advice over all images. Columns: ``estimate``, ``low``, ``high``, ``rounds_used``
    (``rounds=0``: the estimates only).
    """
    y_true, proba = metrics._check(y_true, proba)
    classes = policy.classes
    mel = classes.index("mel") if "mel" in classes else None
    members = np.array([classes.index(c) for c in policy.malignant_classes])

    def kept(fn):
        def metric(y, p):
            keep = ~policy.refer(p)
            return fn(y[keep], p[keep]) if keep.any() else float("nan")
        return metric

    def malignant(which):
        def metric(y, p):
            flagged = policy.malignant_score(p) >= policy.malignant_threshold
            positive = np.isin(y, members)
            group = positive if which == "sensitivity" else ~positive
            if not group.any():
                return float("nan")
            hit = flagged[group] if which == "sensitivity" else ~flagged[group]
            return float(hit.mean())
        return metric

    table = {"referred (unsure)": lambda y, p: float(policy.refer(p).mean()),
             "accuracy of the rest": kept(metrics.accuracy),
             "balanced accuracy of the rest": kept(metrics.balanced_accuracy)}
    if mel is not None:
        table["melanoma sensitivity of the rest"] = kept(lambda y, p: mel_recall(y, p, mel))
    table["malignant advice: sensitivity"] = malignant("sensitivity")
    table["malignant advice: specificity"] = malignant("specificity")
    if rounds == 0:
        out = pd.DataFrame({"estimate": {name: fn(y_true, proba) for name, fn in table.items()}})
    else:
        out = metrics.bootstrap_table(y_true, proba, metrics=table, rounds=rounds, seed=seed,
                                      groups=groups)
    out.index.name = "operating point"
    return out


def plot_referral_curve(curves: dict[str, pd.DataFrame], *, operating: float | None = None,
                        reference: tuple[float, float, str] | None = None, title: str = ""):
    """Share referred (x) against the metrics of the rest (y), one line style per metric.

    ``curves`` maps a label (e.g. "validation", "test") to a :func:`risk_coverage` table;
    ``operating`` draws the chosen share as a vertical line; ``reference`` = ``(share,
    accuracy, label)`` marks a published operating point.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    styles = {"balanced_accuracy": "-", "mel_sensitivity": "--", "accuracy": ":"}
    names = {"balanced_accuracy": "balanced accuracy", "mel_sensitivity": "melanoma sensitivity",
             "accuracy": "accuracy"}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, curve) in enumerate(curves.items()):
        for column, style in styles.items():
            if column in curve:
                ax.plot(curve["referred"], curve[column], style, color=colours[i % len(colours)],
                        label=f"{names[column]} of the rest ({label})")
    if operating is not None:
        ax.axvline(operating, color="grey", lw=1)
        ax.annotate(" chosen share", (operating, 0.02), color="grey", fontsize=8)
    if reference is not None:
        share, acc, text = reference
        ax.plot([share], [acc], "k*", ms=12, label=text)
    ax.set(xlabel="share of images referred to a doctor", ylabel="score of the images kept",
           ylim=(0, 1.02), xlim=(0, 0.92), title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


# --- advice for one image --------------------------------------------------------------------

def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def advise(proba, policy: ReferralPolicy | None, *, in_distribution: bool | None = True,
           names: dict[str, str] | None = None) -> dict:
    """The referral advice for one image's probabilities (one row, in ``policy.classes`` order).

    Returns ``{"level", "message", "confidence", "unsure_threshold", "malignant_score",
    "malignant_threshold", "malignant_high"}``; ``level`` is one of :data:`LEVELS`. An image
    the out-of-distribution gate rejected (``in_distribution=False``) gets ``not_a_lesion``
    whatever the scores. Without a policy (no ``referral.json``) the level is ``None`` and the
    message says the thresholds were never measured.
    """
    proba = np.asarray(proba, dtype=float).reshape(-1)
    if in_distribution is False:
        return {"level": "not_a_lesion", "message": MESSAGES["not_a_lesion"]}
    if policy is None:
        return {"level": None, "message": "No referral thresholds were measured for this model "
                                          "(run the chapter 'Before a model meets a patient'): "
                                          "it cannot tell when it is unsure. See a doctor about "
                                          "any lesion that worries you."}
    names = names or {}
    scaled = policy.scaled(proba[None])[0]
    conf = float(scaled.max())
    members = [c for c in policy.malignant_classes if c in policy.classes]
    mal = float(sum(scaled[policy.classes.index(c)] for c in members))
    high = sorted(((scaled[policy.classes.index(c)], c) for c in members), reverse=True)
    out = {"confidence": round(conf, 6), "unsure_threshold": round(policy.unsure_threshold, 6),
           "malignant_score": round(mal, 6),
           "malignant_threshold": round(policy.malignant_threshold, 6),
           "malignant_high": mal >= policy.malignant_threshold,
           "temperature": round(policy.temperature, 4)}
    if out["malignant_high"]:
        which = ", ".join(f"{names.get(c, c)} {_pct(p)}" for p, c in high if p >= 0.005) or \
            ", ".join(members)
        level = "see_a_doctor_soon"
        message = MESSAGES[level].format(which=which)
    elif conf < policy.unsure_threshold:
        level = "unsure"
        message = MESSAGES[level].format(confidence=_pct(conf),
                                         threshold=_pct(policy.unsure_threshold))
    else:
        level = "no_flag"
        message = MESSAGES[level]
    return {"level": level, "message": message, **out}
