"""Self-checks: is my answer to an exercise right? Answered without showing the answer.

Each exercise asks for its answer under a name (``balanced``, ``mel95``, ...). The cell after it,
in the chapter and in its student copy, reads::

    selfcheck.check("mel-sensitivity-95")

which looks the names up in the notebook and compares them with what the library computes from
the notebook's own data (the same images, run and seed), within a tolerance, or with a property
the exercise asks for (every batch-norm layer frozen, the peak learning rate ten times the
recipe's). It prints one line: right, not yet (with a hint that does not give the value away),
or not answered yet. A learner can run it as often as they like.

The book runner executes the chapters with ``SKINBOOK_SELFCHECK=strict``: there the reference
solutions must pass their own checks, so a check or a solution that drifts fails the book.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STRICT_ENV = "SKINBOOK_SELFCHECK"


class SelfCheckFailed(AssertionError):
    """In strict mode (the book runner), a reference solution did not pass its self-check."""


@dataclass(frozen=True)
class Check:
    """The names an exercise's answer is stored under, and the test of those answers."""

    names: tuple[str, ...]
    test: Callable[[Mapping], str | None]
    """Returns ``None`` when the answer is right, else a hint that does not reveal it."""


def _close(answer, expected, tol: float = 1e-6) -> bool:
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tol, rtol=0, equal_nan=True))
    except (TypeError, ValueError):
        return False


def _quietly(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its printing and the TensorFlow converter's log swallowed."""
    from helpers.quiet import quiet_fds

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            quiet_fds():
        return fn(*args, **kwargs)


# --- chapter 01: exploring the data ---------------------------------------------------------------

def _histo_share(ns) -> str | None:
    ham = ns["ham"]
    expected = (ham["dx_type"] == "histo").groupby(ham["label"], observed=True).mean()
    answer = pd.Series(ns["histo_share"])
    answer.index = answer.index.astype(str)
    for label, value in expected.items():
        if str(label) not in answer.index:
            return f"`histo_share` has no entry for {label}: give every class."
        if not _close(answer[str(label)], value, 0.006):
            return (f"the share for {label} is off. Divide the {label} images whose dx_type is "
                    f"'histo' by all {label} images.")
    return None


def _melanoma_site(ns) -> str | None:
    ham = ns["ham"]
    sites = ham.groupby("localization")["label"].agg(images="size",
                                                     share=lambda s: (s == "mel").mean())
    sites = sites[sites["images"] >= 100]
    if str(ns["top_site"]) != str(sites["share"].idxmax()):
        return ("not the site with the highest melanoma share among sites with at least 100 "
                "images. Count images per site first, keep those sites, then rank by share.")
    return None


# --- chapter 02: preprocessing --------------------------------------------------------------------

def _split_seeds(ns) -> str | None:
    from helpers import splits

    table, answer = ns["table"], pd.DataFrame(ns["test_counts"])
    seeds = [c for c in answer.columns if str(c).startswith("seed ")]
    if len(seeds) < 3:
        return "`test_counts` needs three columns named like 'seed 1', one per seed."
    for column in seeds:
        seed = int(str(column).split()[1])
        expected = table.loc[splits.grouped_split(table, seed=seed) == "test", "label"]
        expected = expected.astype(str).value_counts()
        got = answer[column].copy()
        got.index = got.index.astype(str)
        got = got.reindex(expected.index).fillna(0)
        if not _close(got.to_numpy(), expected.to_numpy()):
            return (f"the counts of {column} are not those of splits.grouped_split(table, "
                    f"seed={seed}): count the labels of the rows it puts in 'test'.")
    return None


def _densenet(ns) -> str | None:
    import keras

    expected = keras.applications.densenet.preprocess_input(np.array(ns["resized"], copy=True))
    if np.shape(ns["by_hand"]) != np.shape(expected):
        return "`by_hand` should have the image's shape (height, width, 3)."
    if not _close(ns["by_hand"], expected, 1e-4):
        return "not DenseNet's preprocessing yet: scale to 0-1 first, then mean, then std."
    return None


# --- chapter 03: transfer learning ----------------------------------------------------------------

def _class_weights(ns) -> str | None:
    import keras

    from helpers import callbacks

    balanced, unweighted = ns["balanced"], ns["unweighted"]
    if not isinstance(unweighted, callbacks.BestBalancedAccuracy):
        return "`unweighted` should be the callback that fit_head returns."
    keys = {"with class weights", "without class weights"}
    if set(balanced) != keys:
        return f"`balanced` needs exactly the keys {sorted(keys)}."
    if not _close(balanced["with class weights"], ns["head_best"].best):
        return "'with class weights' should be the demonstration's result, head_best.best."
    if not _close(balanced["without class weights"], unweighted.best):
        return "'without class weights' should be the best score your callback kept."
    ctx, recipe = ns["ctx"], ns["recipe"]
    keras.utils.set_random_seed(ctx.seed)
    fresh = ns["build_model"](ns["backbone"], ctx.profile.image_size, len(ns["classes"]),
                              ns["weights"].keras_arg, seed=ctx.seed)
    expected = ns["fit_head"](fresh, ns["features"], ns["labels"],
                              epochs=ctx.profile.epochs_head, class_weight=None,
                              lr=recipe.head_lr, patience=max(5, recipe.patience), seed=ctx.seed)
    if not _close(unweighted.best, expected.best):
        return ("the head without class weights should start from a fresh model built like the "
                "demonstration's (same seed) and train with class_weight=None, the rest as in "
                "the demonstration.")
    return None


def _bn_frozen(ns) -> str | None:
    import keras

    net = ns["bn_frozen_model"].get_layer(f"backbone_{ns['backbone']}")
    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if any(layer.trainable for layer in norms):
        return "some batch-norm layers still train: fine-tune with bn_momentum=None."
    if not any(w.trainable for layer in net.layers if layer not in norms for w in layer.weights):
        return "the backbone does not learn at all: fine-tuning must unfreeze its other layers."
    if not ns["bn_frozen_best"].log:
        return "`bn_frozen_best` holds no epoch: store the callback fine_tune returns."
    return None


def _peak_lr(ns) -> str | None:
    schedule = getattr(ns["peak_model"].optimizer, "_learning_rate", None)
    peak = getattr(schedule, "warmup_target", None) or getattr(schedule, "initial_learning_rate",
                                                               None)
    if peak is None:
        return "`peak_model` was not compiled with the fine-tuning schedule (compile_finetune)."
    if not _close(peak, 10 * ns["recipe"].finetune_lr, 1e-12):
        return "the peak of the schedule is not ten times the recipe's finetune_lr."
    if not ns["peak_best"].log:
        return "`peak_best` holds no epoch: store the callback fine_tune returns."
    return None


def _majority(ns) -> str | None:
    from sklearn.metrics import balanced_accuracy_score

    table = ns["table"]
    test = table.loc[table["split"] == "test", "label"].astype(str)
    majority = table.loc[table["split"] == "train", "label"].astype(str).value_counts().idxmax()
    always = np.full(len(test), majority)
    expected = {"accuracy": float(np.mean(always == test.to_numpy())),
                "balanced accuracy": balanced_accuracy_score(test, always)}
    for key, value in expected.items():
        if key not in ns["baseline"]:
            return f"`baseline` needs the key {key!r}."
        if not _close(ns["baseline"][key], value):
            return (f"the {key} is off: the most common class is counted on the *training* "
                    f"part, the score on the test part.")
    return None


def _most_confused(ns) -> str | None:
    run = ns["tuned"]
    pred = run.predictions[run.predictions["split"] == "test"]
    guess = np.asarray(run.classes)[run.probabilities("test").argmax(axis=1)]
    pairs = pd.Series(list(zip(pred["label"].astype(str), guess))).value_counts()
    pairs = pairs[[t != p for t, p in pairs.index]]
    answer = tuple(map(str, ns["most_confused"]))
    if len(answer) != 2 or answer not in pairs.index or pairs[answer] != pairs.max():
        return ("not the most frequent (true, predicted) pair with true != predicted on the "
                "test split: cross-tabulate and ignore the diagonal.")
    return None


def _epoch_budget(ns) -> str | None:
    from helpers import run_folders

    ctx = ns["ctx"]
    val = {}
    for budget in (ctx.profile.epochs_finetune, ctx.profile.epochs_finetune + 1):
        # the profile's own budget is the chapter's fine-tuned run; the other has its own folder
        runs = ctx.runs if budget == ctx.profile.epochs_finetune else \
            ctx.runs / "exercises" / f"budget_{budget}"
        found = [run for run in map(run_folders.load_run, run_folders.find_runs(
                     runs, variant="finetune", task=ns["task"], backbone=ns["backbone"]))
                 if run.manifest["planned_epochs"]["finetune"] == budget
                 and run.manifest["seed"] == ctx.seed]
        if not found:
            return f"train the budget of {budget} epochs first (its run folder is missing)."
        val[budget] = found[0].metrics["val"]["balanced_accuracy"]
    if ns["chosen"] != max(val, key=lambda b: (val[b], -b)):
        return "choose by validation balanced accuracy (on a tie, the cheaper budget)."
    return None


# --- chapter 04: metrics and uncertainty ----------------------------------------------------------

def _bootstrap_of(ns, metric, groups):
    from helpers import metrics

    ctx = ns["ctx"]
    return metrics.bootstrap(metric, ns["y_test"], ns["p_test"],
                             rounds=ctx.profile.bootstrap_rounds, seed=ctx.seed, groups=groups)


def _lesion_bootstrap(ns) -> str | None:
    from helpers import metrics

    for name, groups in (("lesions", ns["test_lesions"]), ("images", None)):
        if name not in ns["widths"]:
            return f"`widths` needs the key {name!r}."
        ci = _bootstrap_of(ns, metrics.balanced_accuracy, groups)
        if not _close(ns["widths"][name], ci["high"] - ci["low"]):
            return (f"the width resampling {name} is off: use the chapter's rounds and seed, "
                    f"and width = high - low.")
    return None


def _mel95(ns) -> str | None:
    from helpers import metrics

    mel = list(ns["classes"]).index("mel")
    ci = _bootstrap_of(ns, lambda y, p: metrics.sensitivity_at_specificity(
        y == mel, p[:, mel], 0.95)[0], ns["test_lesions"])
    for key in ("estimate", "low", "high"):
        if key not in ns["mel95"] or not _close(ns["mel95"][key], ci[key]):
            return ("the interval is off: bootstrap the sensitivity at 95% specificity of "
                    "p(mel), resampling lesions with the chapter's rounds and seed.")
    return None


def _ece_bins(ns) -> str | None:
    from helpers import metrics

    answer = ns["ece_by_bins"]
    if not {5, 10, 20} <= set(answer):
        return "`ece_by_bins` needs the keys 5, 10 and 20."
    for bins, value in answer.items():
        if not _close(value, metrics.expected_calibration_error(ns["y_test"], ns["p_test"],
                                                                int(bins))):
            return f"the ECE with {bins} bins is off (as trained, before temperature scaling)."
    return None


def _temperature(ns) -> str | None:
    from helpers import metrics

    mel = list(ns["classes"]).index("mel")
    y, spec = ns["y_test"] == mel, ns["specificity"]
    for key, proba in (("before", ns["p_test"]), ("after", ns["p_test_scaled"])):
        expected = metrics.sensitivity_at_specificity(y, proba[:, mel], spec)[0]
        if key not in ns["mel_sensitivity"] or not _close(ns["mel_sensitivity"][key], expected):
            return (f"the sensitivity {key} temperature scaling is off: melanoma vs rest, at "
                    f"the chapter's specificity.")
    return None


def _tta(ns) -> str | None:
    from helpers import metrics

    run, tta = ns["run"], pd.DataFrame(ns["tta"])
    for row, prefix in (("plain", "p_"), ("mean of 4 flips", "p4_")):
        y, proba = metrics.from_predictions(run.predictions, run.classes, split="test",
                                            prefix=prefix)
        if row not in tta.index:
            return f"`tta` needs a row {row!r}."
        if not (_close(tta.loc[row, "balanced_accuracy"], metrics.balanced_accuracy(y, proba),
                       0.05) and _close(tta.loc[row, "macro_auc"], metrics.macro_auc(y, proba),
                                        0.01)):
            return (f"the {row!r} row does not match the run's own test predictions: "
                    f"predict the test images {'with' if prefix == 'p4_' else 'without'} flips.")
    return None


# --- chapter 05: leakage and external validity ----------------------------------------------------

def _leaky_share(ns) -> str | None:
    table = ns["leaky_table"]
    train = set(table.loc[table["split"] == "train", "group"])
    test = table[table["split"] == "test"]
    if not _close(ns["leaky_share"], test["group"].isin(train).mean()):
        return ("count the test images whose lesion (`group`) has a photo in the training part, "
                "as a share of all test images.")
    return None


def _duplicate_threshold(ns) -> str | None:
    distances = ns["matches"]["distance"]
    for threshold in (0.05, 0.2):
        if threshold not in ns["copies_at"]:
            return f"`copies_at` needs the key {threshold}."
        if int(ns["copies_at"][threshold]) != int((distances < threshold).sum()):
            return f"the count at {threshold} is off: distances strictly below the threshold."
    return None


def _knn_memoriser(ns) -> str | None:
    from helpers import metrics

    answer, features, labels = ns["knn_balanced_accuracy"], ns["features"], ns["y_all"]
    for name, (_, table) in ns["leak_runs"].items():
        if name not in answer:
            return f"`knn_balanced_accuracy` needs the key {name!r}."
        part = table["split"].to_numpy()
        for k in (1, 5):
            votes = metrics.nearest_neighbour_proba(
                features[part == "train"], labels[part == "train"], features[part == "test"],
                len(ns["classes"]), k=k)
            expected = metrics.balanced_accuracy(labels[part == "test"], votes)
            if k not in answer[name] or not _close(answer[name][k], expected, 1e-3):
                return (f"{name}, k = {k}: count one vote per neighbour among the k most similar "
                        "training images (cosine similarity), then score the argmax.")
    return None


# --- chapter 06: explaining predictions -----------------------------------------------------------

def _gradcam_early(ns) -> str | None:
    from helpers import explain

    expl, layer = ns["expl"], ns["early_layer"]
    if layer == expl.conv_layer[-1]:
        return "that is the default, last layer: pick one from the middle of the backbone."
    expected = explain.gradcam(ns["model"], ns["pictures"], expl.class_index, conv_layer=layer)
    if np.shape(ns["early"]) != expected.shape or not _close(ns["early"], expected, 1e-4):
        return (f"`early` is not the Grad-CAM of {layer} for the explained classes of the same "
                f"images, in the same order.")
    return None


def _gradcam_true(ns) -> str | None:
    from helpers import explain

    examples, classes = ns["examples"], list(ns["classes"])
    wrong = np.flatnonzero(examples["outcome"].to_numpy() == "wrong")
    true_index = [classes.index(label) for label in examples["label"].iloc[wrong]]
    expected = explain.gradcam(ns["model"], ns["pictures"][wrong], true_index,
                               conv_layer=ns["expl"].conv_layer)
    if np.shape(ns["true_cams"]) != expected.shape:
        return "`true_cams` needs one map per wrongly predicted image, in table order."
    if not _close(ns["true_cams"], expected, 1e-4):
        return "the maps are off: explain the *true* class at the default layer."
    return None


# --- chapter 07: export ---------------------------------------------------------------------------

def _int8_calibration(ns) -> str | None:
    from helpers import export

    agreement, source, ctx = ns["agreement"], ns["source"], ns["ctx"]
    if set(agreement) != {10, 200}:
        return "`agreement` needs the keys 10 and 200."
    if not all(0 <= float(v) <= 1 for v in agreement.values()):
        return "agreement is a share of test images: between 0 and 1."
    few = export.calibration_images(ns["samples"], source.classes, source.image_size, 10,
                                    seed=ctx.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "int8.tflite"
        path.write_bytes(_quietly(export.convert, ns["keras_model"], "int8", few))
        probs = export.run_tflite(path, ns["test_x"])
    reference = ns["keras_model"].predict(ns["test_x"], verbose=0).argmax(1)
    if not _close(agreement[10], (probs.argmax(1) == reference).mean()):
        return ("the agreement with 10 calibration images is off: calibrate on "
                "export.calibration_images(..., 10, seed=ctx.seed) and compare predicted "
                "classes with the Keras model's on test_x.")
    return None


def _layer_errors(ns) -> str | None:
    from helpers import export

    errors = _quietly(export.layer_errors, ns["keras_model"], ns["calibration"])
    if ns["worst_layer"] != errors.loc[errors["error_in_steps"].idxmax(), "layer"]:
        return "not the layer with the largest error_in_steps."
    return None


# --- chapter 09: better models --------------------------------------------------------------------

def _no_site(ns) -> str | None:
    import keras

    from helpers import heads, metadata, metrics

    answer = float(ns["no_site"])
    if not 0 <= answer <= 1:
        return "a balanced accuracy is between 0 and 1."
    site = [i for i, n in enumerate(metadata.feature_names()) if n.startswith("site")]
    meta = {p: ns["meta"][p].copy() for p in ("train", "val")}
    for m in meta.values():
        m[:, site] = 0.0
    feats, ctx = ns["feats"], ns["ctx"]
    keras.utils.set_random_seed(ctx.seed)
    head = metadata.fused_head(ns["dim"], len(ns["classes"]), meta_dim=meta["train"].shape[1],
                               seed=ctx.seed)
    _quietly(heads.fit_head, head, {p: [feats[p][0], meta[p]] for p in ("train", "val")},
             ns["y"], class_weight=ns["class_weight"], epochs=ctx.profile.epochs_head,
             seed=ctx.seed)
    expected = metrics.balanced_accuracy(
        ns["y"]["val"], head.predict([feats["val"][0], meta["val"]], verbose=0))
    if not _close(answer, expected, 1e-6):
        return ("not the same head: zero all 15 site columns (flag included) in every split, "
                "build the fused head after keras.utils.set_random_seed(ctx.seed), and fit it "
                "as the fused head was fitted.")
    return None


def _tau_one(ns) -> str | None:
    from helpers import imbalance, metrics

    expected = metrics.balanced_accuracy(
        ns["y"]["val"], imbalance.logit_adjusted(ns["plain_probs"]["val"][0], ns["prior"], 1.0))
    if not _close(float(ns["tau_one"]), expected):
        return ("adjust the *uncorrected* head's one-view validation probabilities "
                "(plain_probs['val'][0]) with the training prior and tau = 1.")
    return None


def _top_two(ns) -> str | None:
    from helpers import ensemble, metrics

    y_val, candidates = ns["y"]["val"], ns["candidates"]
    score = {n: metrics.balanced_accuracy(y_val, r.probabilities("val", flips=True))
             for n, r in candidates.items()}
    two = sorted(score, key=lambda n: (-score[n], n))[:2]
    expected = metrics.balanced_accuracy(y_val, ensemble.average(
        [candidates[n].probabilities("val", flips=True) for n in two]))
    if not _close(float(ns["top_two"]), expected):
        return ("average the 4-flip validation probabilities of the two candidates with the "
                "highest validation balanced accuracy, then score the average.")
    return None


CHECKS: dict[str, Check] = {
    "histo-share": Check(("histo_share",), _histo_share),
    "melanoma-site": Check(("top_site",), _melanoma_site),
    "split-seeds": Check(("test_counts",), _split_seeds),
    "densenet-preprocessing": Check(("by_hand",), _densenet),
    "class-weights": Check(("balanced", "unweighted"), _class_weights),
    "bn-frozen": Check(("bn_frozen_model", "bn_frozen_best"), _bn_frozen),
    "peak-lr": Check(("peak_model", "peak_best"), _peak_lr),
    "majority-baseline": Check(("baseline",), _majority),
    "most-confused": Check(("most_confused",), _most_confused),
    "epoch-budget": Check(("chosen",), _epoch_budget),
    "lesion-bootstrap": Check(("widths",), _lesion_bootstrap),
    "mel-sensitivity-95": Check(("mel95",), _mel95),
    "ece-bins": Check(("ece_by_bins",), _ece_bins),
    "temperature-sensitivity": Check(("mel_sensitivity",), _temperature),
    "test-time-augmentation": Check(("tta",), _tta),
    "leaky-share": Check(("leaky_share",), _leaky_share),
    "duplicate-threshold": Check(("copies_at",), _duplicate_threshold),
    "knn-memoriser": Check(("knn_balanced_accuracy",), _knn_memoriser),
    "gradcam-early-layer": Check(("early_layer", "early"), _gradcam_early),
    "gradcam-true-class": Check(("true_cams",), _gradcam_true),
    "int8-calibration": Check(("agreement",), _int8_calibration),
    "int8-layer-errors": Check(("worst_layer",), _layer_errors),
    "metadata-without-site": Check(("no_site",), _no_site),
    "logit-adjustment-tau-one": Check(("tau_one",), _tau_one),
    "ensemble-top-two": Check(("top_two",), _top_two),
}
"""Every exercise's self-check, by the key its chapter cell passes to :func:`check`."""


def verdict(key: str, namespace: Mapping) -> tuple[bool, str]:
    """Whether the answer to exercise ``key`` in ``namespace`` is right, and the line saying so."""
    if key not in CHECKS:
        raise KeyError(f"no self-check named {key!r}; known: {', '.join(CHECKS)}")
    spec = CHECKS[key]
    missing = [name for name in spec.names if name not in namespace]
    if missing:
        return False, (f"Self-check {key}: no `{missing[0]}` yet. Store your answer under that "
                       f"name in the cell above, run it, then run this cell again.")
    try:
        problem = spec.test(namespace)
    except Exception as err:  # noqa: BLE001 - a malformed answer: say so, do not crash
        problem = f"the answer could not be checked ({type(err).__name__}: {err})."
    if problem is None:
        return True, f"Self-check {key}: \u2714 right."
    return False, f"Self-check {key}: \u2718 not yet: {problem}"


def check(key: str, namespace: Mapping | None = None) -> None:
    """Print whether the answer to exercise ``key`` is right (see :func:`verdict`).

    ``namespace`` defaults to the caller's globals (the notebook). With
    ``$SKINBOOK_SELFCHECK=strict`` (the book runner) a missing or wrong answer raises
    :class:`SelfCheckFailed`: the chapter's own solution must pass.
    """
    right, line = verdict(key, sys._getframe(1).f_globals if namespace is None else namespace)
    print(line)
    if not right and os.environ.get(STRICT_ENV) == "strict":
        raise SelfCheckFailed(line)
