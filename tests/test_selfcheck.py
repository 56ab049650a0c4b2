"""Self-checks (helpers.selfcheck): each exercise's check exists, is used, stays in the student
copy, and says right, not yet or not answered without giving the answer away; strict mode (the
book runner) turns a reference solution that fails its check into an error."""

from __future__ import annotations

import re

import jupytext
import numpy as np
import pandas as pd
import pytest

from helpers import metrics, notebooks, selfcheck, student

USED = re.compile(r"selfcheck\.check\(\"([\w-]+)\"\)")


def test_every_check_is_used_once_and_follows_its_exercise():
    used = []
    for source in notebooks.sources():
        cells = jupytext.read(source).cells
        for i, cell in enumerate(cells):
            for key in USED.findall(cell.source):
                used.append(key)
                assert student.is_solution(cells[i - 1]), f"{key}: not right after a solution"
                assert any(student.is_exercise(c) for c in cells[:i]), key
    assert sorted(used) == sorted(selfcheck.CHECKS), "checks used in chapters != checks defined"


@pytest.fixture
def ece_namespace():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), 60)
    return {"y_test": y, "p_test": proba}


def test_right_wrong_and_missing_answers(ece_namespace, capsys, monkeypatch):
    monkeypatch.delenv(selfcheck.STRICT_ENV, raising=False)
    ns = dict(ece_namespace)
    selfcheck.check("ece-bins", ns)
    assert "no `ece_by_bins` yet" in capsys.readouterr().out
    right = {n: metrics.expected_calibration_error(ns["y_test"], ns["p_test"], n)
             for n in (5, 10, 20)}
    ns["ece_by_bins"] = {n: v + 0.05 for n, v in right.items()}
    ok, line = selfcheck.verdict("ece-bins", ns)
    assert not ok and "not yet" in line and f"{right[5]:.2f}" not in line  # no value given away
    ns["ece_by_bins"] = right
    selfcheck.check("ece-bins", ns)
    assert "right" in capsys.readouterr().out
    ns["ece_by_bins"] = "nonsense"
    assert selfcheck.verdict("ece-bins", ns)[0] is False           # a malformed answer: no crash


def test_strict_mode_raises_on_a_wrong_or_missing_answer(ece_namespace, monkeypatch):
    monkeypatch.setenv(selfcheck.STRICT_ENV, "strict")
    with pytest.raises(selfcheck.SelfCheckFailed):
        selfcheck.check("ece-bins", ece_namespace)
    with pytest.raises(KeyError):
        selfcheck.check("no-such-exercise", ece_namespace)


def test_check_reads_the_callers_globals(monkeypatch, capsys):
    monkeypatch.delenv(selfcheck.STRICT_ENV, raising=False)
    global copies_at, matches
    matches = pd.DataFrame({"distance": [0.01, 0.04, 0.12, 0.3]})
    copies_at = {0.05: 2, 0.2: 3}
    try:
        selfcheck.check("duplicate-threshold")
        assert "right" in capsys.readouterr().out
        copies_at = {0.05: 2, 0.2: 4}
        selfcheck.check("duplicate-threshold")
        assert "not yet" in capsys.readouterr().out
    finally:
        del copies_at, matches


def test_split_and_preprocessing_checks_on_real_data(ham_sample, monkeypatch):
    import keras

    from helpers import images, splits

    monkeypatch.delenv(selfcheck.STRICT_ENV, raising=False)
    table = ham_sample
    counts = pd.DataFrame({f"seed {s}": table.loc[splits.grouped_split(table, seed=s) == "test",
                                                  "label"].value_counts() for s in (1, 2, 3)})
    assert selfcheck.verdict("split-seeds", {"table": table, "test_counts": counts})[0]
    assert not selfcheck.verdict("split-seeds", {"table": table, "test_counts": counts + 1})[0]
    resized = images.load_batch(table["path"][:1], (48, 64))[0]
    right = keras.applications.densenet.preprocess_input(resized.copy())
    assert selfcheck.verdict("densenet-preprocessing", {"resized": resized, "by_hand": right})[0]
    assert not selfcheck.verdict("densenet-preprocessing",
                                 {"resized": resized, "by_hand": resized / 127.5 - 1})[0]


def test_knn_memoriser_check_on_real_images(ham_sample, monkeypatch):
    """Chapter 05's k-nearest-neighbour exercise: real thumbnails of real images as features, a
    lesion-grouped and a random split; the right votes pass, a wrong k = 5 score and a missing
    split fail."""
    from helpers import images, splits

    monkeypatch.delenv(selfcheck.STRICT_ENV, raising=False)
    table = ham_sample.reset_index(drop=True)
    features = images.load_batch(table["path"], (12, 16)).reshape(len(table), -1) + 1.0
    labels = table["label"].cat.codes.to_numpy()
    classes = list(table["label"].cat.categories)
    runs = {"grouped": (None, table.assign(split=splits.grouped_split(table, seed=0))),
            "random": (None, table.assign(split=splits.random_image_split(table, seed=0)))}

    def score(t, k):  # the chapter's solution, written out
        part = t["split"].to_numpy()
        train, test = features[part == "train"], features[part == "test"]
        sim = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ \
            (train / np.linalg.norm(train, axis=1, keepdims=True)).T
        nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        votes = np.eye(len(classes))[labels[part == "train"][nearest]].sum(axis=1)
        return metrics.balanced_accuracy(labels[part == "test"], votes)

    right = {name: {k: score(t, k) for k in (1, 5)} for name, (_, t) in runs.items()}
    ns = {"knn_balanced_accuracy": right, "features": features, "y_all": labels,
          "classes": classes, "leak_runs": runs}
    assert selfcheck.verdict("knn-memoriser", ns)[0]
    wrong = {name: {1: v[1], 5: v[5] + 0.05} for name, v in right.items()}
    assert not selfcheck.verdict("knn-memoriser", ns | {"knn_balanced_accuracy": wrong})[0]
    assert not selfcheck.verdict("knn-memoriser", ns | {"knn_balanced_accuracy": {}})[0]


def test_epoch_budget_check_reads_the_chapters_run_and_the_exercise_run(monkeypatch):
    """Chapter 03's Exercise 6 on the smoke book's real runs: the profile's budget is the
    chapter's own fine-tuned run (not trained twice), the extra epoch its exercise folder; only
    the budget with the higher validation score passes, and a backbone without the exercise's
    run is told to train it."""
    import helpers
    from helpers import config, run_folders

    monkeypatch.delenv(selfcheck.STRICT_ENV, raising=False)
    ctx = helpers.setup("03", profile="smoke")
    budget = ctx.profile.epochs_finetune
    extra = config.runs_root("smoke") / "exercises" / f"budget_{budget + 1}"
    own = run_folders.find_runs(ctx.runs, task="ham10000", variant="finetune",
                                backbone=ctx.profile.pretraining_backbone)
    other = run_folders.find_runs(extra, variant="finetune")
    if not (own and other):
        pytest.skip("no smoke chapter 03 runs: run `python -m helpers.book --profile smoke`")
    val = {b: run_folders.load_run(folder).metrics["val"]["balanced_accuracy"]
           for b, folder in ((budget, own[0]), (budget + 1, other[0]))}
    best = max(val, key=lambda b: (val[b], -b))
    ns = {"ctx": ctx, "task": "ham10000", "backbone": ctx.profile.pretraining_backbone}
    assert selfcheck.verdict("epoch-budget", {**ns, "chosen": best})[0]
    worse = budget + 1 if best == budget else budget
    assert not selfcheck.verdict("epoch-budget", {**ns, "chosen": worse})[0]
    ok, line = selfcheck.verdict("epoch-budget", {**ns, "backbone": "resnet50", "chosen": best})
    assert not ok and "run folder is missing" in line
