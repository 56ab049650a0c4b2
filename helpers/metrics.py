"""Metrics for an imbalanced, multi-class medical-image problem, with their uncertainty.

Everything here takes plain arrays: ``y_true`` (integer class indices) and ``proba`` (an
``(N, K)`` array of predicted probabilities, rows summing to 1), so it works the same on a run
folder's ``predictions.csv`` (see :func:`from_predictions`) and on crafted test arrays.

- headline metrics: accuracy, balanced accuracy, macro F1, macro one-vs-rest ROC-AUC, log loss
  (:func:`summary`), the per-class report (:func:`classification_table`) and confusion matrices;
- melanoma (or any one class) sensitivity at a fixed specificity (:func:`sensitivity_at_specificity`);
- percentile bootstrap confidence intervals, resampling whole lesions when groups are given
  (:func:`bootstrap`, :func:`bootstrap_table`);
- calibration: reliability table, expected calibration error (:func:`expected_calibration_error`)
  and temperature scaling fitted on validation, applied to test (:func:`fit_temperature`).

Educational tool only: a good number here is not a diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

EPS = 1e-12


# --- reading predictions ----------------------------------------------------------------------

def from_predictions(predictions: pd.DataFrame, classes: Sequence[str], *,
                     split: str | None = None, prefix: str = "p_"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, proba)`` from a predictions table (columns ``label`` and ``p_<class>``).

    ``split`` keeps only the rows of that part (``"val"``, ``"test"``). ``prefix="p4_"`` reads
    the 4-flip (test-time augmentation) columns instead. Rows whose label is not one of
    ``classes`` raise ``ValueError``.
    """
    table = predictions if split is None else predictions[predictions["split"] == split]
    if split is not None and table.empty:
        raise ValueError(f"no rows with split == {split!r} in the predictions table")
    columns = [f"{prefix}{c}" for c in classes]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"predictions lack the columns {missing}")
    index = {c: i for i, c in enumerate(classes)}
    labels = table["label"].astype(str)
    unknown = set(labels) - set(index)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in classes {list(classes)}")
    y_true = labels.map(index).to_numpy(dtype=int)
    return y_true, table[columns].to_numpy(dtype=float)


def _check(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or len(proba) != len(y_true):
        raise ValueError(f"proba must be (N, K) with N = len(y_true) = {len(y_true)}, "
                         f"got shape {proba.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= proba.shape[1]):
        raise ValueError(f"y_true holds class indices outside 0..{proba.shape[1] - 1}")
    return y_true, proba


# --- headline metrics -------------------------------------------------------------------------

def macro_auc(y_true, proba) -> float:
    """Macro one-vs-rest ROC-AUC over the classes present in ``y_true`` (NaN if fewer than 2).

    A class with no test image has no ROC curve; it is left out of the average rather than
    breaking the whole metric (small test sets in the smoke profile hit this).
    """
    y_true, proba = _check(y_true, proba)
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return binary_auc(y_true == 1, proba[:, 1])
    return float(np.mean([binary_auc(y_true == k, proba[:, k]) for k in present]))


def binary_auc(y_positive, score) -> float:
    """ROC-AUC of one positive class: the chance that a random positive outscores a random
    negative (ties count half), computed from ranks (the Mann-Whitney U statistic).

    Same value as ``sklearn.metrics.roc_auc_score``, fast enough for thousands of bootstrap
    rounds. NaN when only one class is present.
    """
    from scipy.stats import rankdata

    y_positive = np.asarray(y_positive, dtype=bool)
    n_pos = int(y_positive.sum())
    n_neg = len(y_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=float))
    return float((ranks[y_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true, proba) -> float:
    """Mean negative log-likelihood of the true class (natural log)."""
    y_true, proba = _check(y_true, proba)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], EPS, 1.0))))


def balanced_accuracy(y_true, proba) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (argmax predictions)."""
    y_true, proba = _check(y_true, proba)
    if len(y_true) == 0:
        return float("nan")
    correct = proba.argmax(1) == y_true
    # per-class recall = mean of "correct" within each true class; then the mean over classes
    counts = np.bincount(y_true, minlength=proba.shape[1])
    hits = np.bincount(y_true, weights=correct, minlength=proba.shape[1])
    present = counts > 0
    return float(np.mean(hits[present] / counts[present]))


def accuracy(y_true, proba) -> float:
    y_true, proba = _check(y_true, proba)
    return float(np.mean(proba.argmax(1) == y_true))


def macro_f1(y_true, proba) -> float:
    """Macro F1 over the classes present in ``y_true`` or predicted."""
    y_true, proba = _check(y_true, proba)
    return float(skm.f1_score(y_true, proba.argmax(1), average="macro", zero_division=0))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": macro_f1,
    "macro_auc": macro_auc,
}
"""The headline metrics, each ``f(y_true, proba) -> float``; :func:`bootstrap_table` uses them."""


def summary(y_true, proba) -> dict[str, float]:
    """Headline metrics of one set of predictions, plus log loss, ECE and the image count."""
    y_true, proba = _check(y_true, proba)
    out = {name: fn(y_true, proba) for name, fn in METRICS.items()}
    out["log_loss"] = log_loss(y_true, proba)
    out["ece"] = expected_calibration_error(y_true, proba)
    out["n_images"] = int(len(y_true))
    return out


def classification_table(y_true, proba, classes: Sequence[str]) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support (sklearn's classification report as a table)."""
    y_true, proba = _check(y_true, proba)
    report = skm.classification_report(y_true, proba.argmax(1), labels=list(range(len(classes))),
                                       target_names=list(classes), output_dict=True,
                                       zero_division=0)
    table = pd.DataFrame(report).T
    table["support"] = table["support"].astype(int)
    return table.drop(index=[r for r in ("accuracy", "micro avg") if r in table.index])


def confusion(y_true, y_pred, classes: Sequence[str], *, normalize: bool = False) -> pd.DataFrame:
    """Confusion matrix as a labelled table: rows = true class, columns = predicted class.

    With ``normalize`` each row is divided by its total, so the diagonal is per-class recall
    (a class with no images gets a row of NaN rather than a division by zero).
    """
    matrix = skm.confusion_matrix(y_true, y_pred, labels=list(range(len(classes)))).astype(float)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    table = pd.DataFrame(matrix, index=pd.Index(classes, name="true"),
                         columns=pd.Index(classes, name="predicted"))
    return table if normalize else table.astype(int)


# --- one class against the rest ---------------------------------------------------------------

def sensitivity_at_specificity(y_positive, score, specificity: float = 0.9) -> tuple[float, float]:
    """Best sensitivity reachable while keeping specificity at least ``specificity``.

    ``y_positive`` is boolean (is it, say, a melanoma?), ``score`` the model's probability for
    that class. Returns ``(sensitivity, threshold)``: call positive when ``score >= threshold``.
    This is how a screening tool is judged: first fix how many healthy people may be sent on
    needlessly, then ask how many cancers are caught.
    """
    if not 0 < specificity < 1:
        raise ValueError(f"specificity must be in (0, 1), got {specificity}")
    y_positive = np.asarray(y_positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    if y_positive.all() or not y_positive.any():
        return float("nan"), float("nan")
    fpr, tpr, thresholds = skm.roc_curve(y_positive, score, drop_intermediate=False)
    ok = fpr <= 1 - specificity + 1e-12
    # the highest sensitivity allowed; among ties the lowest threshold (thresholds decrease)
    best = np.flatnonzero(ok & (tpr == tpr[ok].max()))[-1]
    return float(tpr[best]), float(thresholds[best])


def specificity_at_threshold(y_positive, score, threshold: float) -> tuple[float, float]:
    """``(sensitivity, specificity)`` of the rule ``score >= threshold`` (e.g. one fixed on val)."""
    y_positive = np.asarray(y_positive, dtype=bool)
    predicted = np.asarray(score, dtype=float) >= threshold
    sens = predicted[y_positive].mean() if y_positive.any() else float("nan")
    spec = (~predicted[~y_positive]).mean() if (~y_positive).any() else float("nan")
    return float(sens), float(spec)


def class_score(proba: np.ndarray, classes: Sequence[str], members: Sequence[str] | str) -> np.ndarray:
    """The summed probability of ``members`` (e.g. ``{"mel", "bcc", "akiec"}`` = malignant)."""
    members = [members] if isinstance(members, str) else list(members)
    unknown = set(members) - set(classes)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not among the classes {list(classes)}")
    return np.asarray(proba)[:, [list(classes).index(m) for m in members]].sum(axis=1)


# --- bootstrap ----------------------------------------------------------------------------------

def bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], y_true, proba, *,
              rounds: int = 1000, seed: int = 42, alpha: float = 0.05,
              groups: Sequence | None = None) -> dict[str, float]:
    """Percentile bootstrap confidence interval of ``metric(y_true, proba)``.

    Resamples the test set with replacement ``rounds`` times. With ``groups`` (lesion ids),
    whole lesions are resampled, because photos of one lesion are not independent evidence.
    Rounds where the metric is undefined (e.g. an AUC with one class drawn) are skipped and
    counted. Returns ``{"estimate", "low", "high", "rounds_used"}``.
    """
    y_true, proba = _check(y_true, proba)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    estimate = metric(y_true, proba)
    if groups is None:
        members = [np.array([i]) for i in range(len(y_true))]
    else:
        codes, _ = pd.factorize(pd.Series(list(groups)))
        if len(codes) != len(y_true):
            raise ValueError("groups must have one entry per row of y_true")
        order = np.argsort(codes, kind="stable")
        members = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    values = np.full(rounds, np.nan)
    for r in range(rounds):
        drawn = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[i] for i in drawn])
        try:
            values[r] = metric(y_true[idx], proba[idx])
        except ValueError:
            continue
    used = int(np.isfinite(values).sum())
    if used == 0:
        return {"estimate": float(estimate), "low": float("nan"), "high": float("nan"),
                "rounds_used": 0}
    low, high = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"estimate": float(estimate), "low": float(low), "high": float(high),
            "rounds_used": used}


def bootstrap_table(y_true, proba, *, metrics: Mapping[str, Callable] | None = None,
                    rounds: int = 1000, seed: int = 42, alpha: float = 0.05,
                    groups: Sequence | None = None) -> pd.DataFrame:
    """:func:`bootstrap` for several metrics at once, one row per metric."""
    metrics = METRICS if metrics is None else metrics
    rows = {name: bootstrap(fn, y_true, proba, rounds=rounds, seed=seed, alpha=alpha,
                            groups=groups) for name, fn in metrics.items()}
    table = pd.DataFrame(rows).T
    table["rounds_used"] = table["rounds_used"].astype(int)
    table.index.name = "metric"
    return table


def format_ci(row: Mapping[str, float], digits: int = 3) -> str:
    """``"0.812 (0.770-0.851)"`` from a :func:`bootstrap` result."""
    return (f"{row['estimate']:.{digits}f} ({row['low']:.{digits}f}-{row['high']:.{digits}f})")


# --- calibration --------------------------------------------------------------------------------

def reliability_table(y_true, proba, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability: per confidence bin, mean confidence, accuracy and count.

    Confidence is the probability of the predicted class; bins are equal-width on [0, 1]
    (empty bins are dropped). A calibrated model has accuracy close to confidence in each bin.
    """
    y_true, proba = _check(y_true, proba)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "confidence": confidence, "correct": correct})
    table = frame.groupby("bin").agg(confidence=("confidence", "mean"),
                                     accuracy=("correct", "mean"), count=("correct", "size"))
    table["low"] = edges[table.index]
    table["high"] = edges[table.index + 1]
    return table.reset_index(drop=True)[["low", "high", "confidence", "accuracy", "count"]]


def expected_calibration_error(y_true, proba, n_bins: int = 10) -> float:
    """Top-label ECE: the count-weighted mean gap between confidence and accuracy per bin."""
    table = reliability_table(y_true, proba, n_bins)
    if table.empty:
        return float("nan")
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def apply_temperature(proba, temperature: float) -> np.ndarray:
    """Soften (``T > 1``) or sharpen (``T < 1``) probabilities: ``softmax(log(p) / T)``.

    The model outputs softmax probabilities, so ``log(p)`` are its logits up to a constant,
    which the softmax ignores. The argmax never changes: accuracy stays the same.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(np.asarray(proba, dtype=float), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(y_true, proba, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the log loss of ``proba`` (fit it on *validation* data).

    One scalar, found by a bounded 1-D search on ``log T``; it is then applied unchanged to the
    test predictions with :func:`apply_temperature` (Guo et al., "On Calibration of Modern
    Neural Networks", ICML 2017).
    """
    from scipy.optimize import minimize_scalar

    y_true, proba = _check(y_true, proba)
    if len(y_true) == 0:
        raise ValueError("cannot fit a temperature on zero predictions")
    result = minimize_scalar(lambda log_t: log_loss(y_true, apply_temperature(proba, np.exp(log_t))),
                             bounds=tuple(np.log(bounds)), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def calibration_summary(y_val, proba_val, y_test, proba_test, n_bins: int = 10
                        ) -> tuple[float, pd.DataFrame]:
    """Fit a temperature on validation, apply it to test; return ``(T, before/after table)``."""
    temperature = fit_temperature(y_val, proba_val)
    scaled = apply_temperature(proba_test, temperature)
    rows = {}
    for name, p in (("before (T = 1)", np.asarray(proba_test, dtype=float)),
                    (f"after (T = {temperature:.2f})", scaled)):
        rows[name] = {"log_loss": log_loss(y_test, p),
                      "ece": expected_calibration_error(y_test, p, n_bins),
                      "accuracy": accuracy(y_test, p),
                      "mean_confidence": float(p.max(axis=1).mean())}
    table = pd.DataFrame(rows).T
    table.index.name = "test predictions"
    return temperature, table


# --- run folders: one evaluation, many models ---------------------------------------------------

def binary_summary(y_positive, score, *, specificity: float = 0.9) -> dict[str, float]:
    """AUC, average precision and sensitivity at ``specificity`` of one positive class."""
    y_positive = np.asarray(y_positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    both = y_positive.any() and (~y_positive).any()
    sens, threshold = sensitivity_at_specificity(y_positive, score, specificity)
    return {"n_images": int(len(y_positive)), "n_positive": int(y_positive.sum()),
            "auc": float(skm.roc_auc_score(y_positive, score)) if both else float("nan"),
            "average_precision": (float(skm.average_precision_score(y_positive, score))
                                  if both else float("nan")),
            f"sensitivity_at_{specificity:.0%}_specificity": sens, "threshold": threshold}


def evaluate_run(run, *, groups: Mapping[str, str] | None = None, rounds: int = 1000,
                 seed: int = 42, specificity: float = 0.9, positive: str | None = None,
                 split: str = "test") -> dict:
    """One row of the model comparison: the run's manifest facts and its ``split`` metrics.

    ``run`` is a :class:`helpers.run_folders.RunFolder`. ``groups`` maps image id to lesion id so
    that the bootstrap resamples lesions. ``positive`` (default ``mel`` if the run has it, else
    ``malignant``) is the class whose sensitivity at ``specificity`` is reported.
    """
    classes = run.classes
    positive = positive or ("mel" if "mel" in classes else "malignant")
    y, proba = from_predictions(run.predictions, classes, split=split)
    ids = run.predictions.loc[run.predictions["split"] == split, "image_id"].astype(str)
    group_list = None if groups is None else [groups.get(i, i) for i in ids]
    manifest = run.manifest
    weights = manifest.get("weights", {})
    row = {"run": run.path.name, "task": manifest.get("task"), "backbone": manifest.get("backbone"),
           "variant": manifest.get("variant"), "weights": weights.get("source"),
           "weights file": weights.get("file") or "-",
           "image size": "x".join(map(str, manifest.get("image_size", []))),
           "test images": int(len(y))}
    cis = bootstrap_table(y, proba, metrics={"balanced_accuracy": balanced_accuracy,
                                             "macro_auc": macro_auc},
                          rounds=rounds, seed=seed, groups=group_list)
    row["accuracy"] = accuracy(y, proba)
    for name in cis.index:
        row[name] = cis.loc[name, "estimate"]
        row[f"{name} low"] = cis.loc[name, "low"]
        row[f"{name} high"] = cis.loc[name, "high"]
    k = classes.index(positive)
    sens, _ = sensitivity_at_specificity(y == k, proba[:, k], specificity)
    row["positive class"] = positive
    row[f"sensitivity at {specificity:.0%} spec."] = sens
    row["ece"] = expected_calibration_error(y, proba)
    row["wall time (s)"] = manifest.get("wall_time_s")
    return row


def compare_runs(paths: Sequence, **kwargs) -> pd.DataFrame:
    """:func:`evaluate_run` for every run folder in ``paths``: the side-by-side table."""
    from helpers import run_folders

    rows = [evaluate_run(run_folders.load_run(p), **kwargs) for p in paths]
    return pd.DataFrame(rows)


def leak_breakdown(table: pd.DataFrame, predictions: pd.DataFrame, classes: Sequence[str]
                   ) -> pd.DataFrame:
    """Test metrics split by whether the test image's lesion also has photos in train.

    ``table`` is the sample table with the ``split`` the model was trained on; ``predictions``
    the run's predictions. With a lesion-grouped split the "seen" row is empty.
    """
    train_groups = set(table.loc[table["split"] == "train", "group"])
    group_of = dict(zip(table["image_id"].astype(str), table["group"]))
    test = predictions[predictions["split"] == "test"].reset_index(drop=True)
    seen = test["image_id"].astype(str).map(group_of).isin(train_groups).to_numpy()
    y, proba = from_predictions(test, classes)
    rows = {}
    for name, mask in (("lesion also in train", seen), ("new lesion", ~seen), ("all", None)):
        mask = np.ones(len(y), bool) if mask is None else mask
        rows[name] = {"test images": int(mask.sum()),
                      "accuracy": accuracy(y[mask], proba[mask]) if mask.any() else float("nan"),
                      "balanced_accuracy": (balanced_accuracy(y[mask], proba[mask])
                                            if mask.any() else float("nan"))}
    out = pd.DataFrame(rows).T
    out["test images"] = out["test images"].astype(int)
    return out


def nearest_neighbour_proba(train_features, train_labels, test_features, n_classes: int, *,
                            k: int = 1, chunk: int = 1024) -> np.ndarray:
    """A pure memoriser: each test image gets the labels of its ``k`` most similar training
    images, one vote each.

    Similarity is the cosine between feature vectors (ties go to the earlier training image);
    the votes are returned as an ``(N, n_classes)`` array (one-hot for ``k = 1``) so every
    metric here applies. On a leaky split the most similar training image is often another
    photo of the same lesion.
    """
    def unit(x):
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train, test = unit(train_features), unit(test_features)
    train_labels = np.asarray(train_labels, dtype=int)
    if len(train) == 0:
        raise ValueError("no training features")
    if not 1 <= k <= len(train):
        raise ValueError(f"k must be in 1..{len(train)} (the training images), got {k}")
    nearest = np.concatenate([np.argsort(-(test[i:i + chunk] @ train.T), axis=1,
                                         kind="stable")[:, :k]
                              for i in range(0, len(test), chunk)]) if len(test) else \
        np.empty((0, k), dtype=int)
    return np.eye(n_classes)[train_labels[nearest]].sum(axis=1)
