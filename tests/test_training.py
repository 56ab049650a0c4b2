"""Training and run folders: real images, real (small) models, real weights; no mocks.

Two tiny trainings (MobileNet 0.25 through images, DenseNet121 top blocks on cached maps) check
that a run folder is complete, that its saved model reproduces its own predictions.csv from raw
pixels, and that its metrics are those of its predictions.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import book, config, images, run_folders, scoring, splits, training

SIZE = (48, 64)


@pytest.fixture(scope="module")
def tiny_table(ham_table):
    """About 80 real HAM10000 images, every class, with a lesion-grouped split."""
    from helpers import datasets

    table = datasets.subsample(ham_table, 70, seed=1, min_per_class=8)
    return table.assign(split=splits.grouped_split(table, seed=1))


@pytest.fixture(scope="module")
def tiny_profile():
    smoke = config.load_profile("smoke")
    return dataclasses.replace(smoke, name="pytest", image_size=SIZE, batch_size=16,
                               epochs_head=3, epochs_finetune=1)


@pytest.fixture(scope="module")
def weights_dir():
    import os

    if not os.environ.get("SKINBOOK_WEIGHTS"):
        pytest.skip("SKINBOOK_WEIGHTS is not set (the offline ImageNet weights folder)")
    os.environ["SKINBOOK_OFFLINE"] = "1"
    return os.environ["SKINBOOK_WEIGHTS"]


@pytest.fixture(scope="module")
def mobilenet_runs(tiny_table, tiny_profile, weights_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    job = training.Job(task="ham10000", backbone="mobilenet_025", profile=tiny_profile, runs=runs,
                       table=tiny_table)
    return runs, training.train(job)


def _check_model_reproduces_predictions(run, table):
    test = run.predictions[run.predictions["split"] == "test"]
    rows = table.set_index("image_id").loc[test["image_id"]].reset_index()
    ds = images.make_dataset(rows, run.classes, run.image_size, batch_size=16, cache=False)
    model = run.load_model()
    probs = model.predict(ds.map(lambda x, y: x), verbose=0)
    np.testing.assert_allclose(probs, run.probabilities("test"), atol=2e-4)
    # metrics.json's test-time-augmentation scores are those of the saved model's 4-flip mean
    flipped = scoring.predict_images(model, rows, run.classes, run.image_size, flips=True)
    y = scoring.label_indices(rows, run.classes)
    assert run.metrics["test_flips"] == pytest.approx(
        scoring.split_metrics(y, flipped, len(run.classes)), abs=1e-3)


def test_run_folders_are_complete_and_self_consistent(mobilenet_runs, tiny_table):
    runs, out = mobilenet_runs
    assert set(out) == {"frozen", "finetune"}
    for variant, path in out.items():
        assert path == runs / "models" / f"ham10000__mobilenet_025__{variant}"
        run = run_folders.load_run(path)
        m = run.manifest
        assert m["variant"] == variant and m["task"] == "ham10000"
        assert m["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        assert m["weights"]["file"] == "mobilenet_2_5_224_tf_no_top.h5"
        assert m["weights"]["sha256"].startswith("dbdb03ee2a22fd89")
        assert m["image_size"] == list(SIZE) and m["profile"] == "pytest"
        assert m["split_hash"] == splits.table_hash(tiny_table)
        assert m["wall_time_s"] > 0 and m["epochs"]["head"] >= 1
        assert (variant == "finetune") == (m["epochs"]["finetune"] == 1)
        # predictions: val and test rows, one probability column per class, rows sum to 1
        pred = run.predictions
        assert set(pred["split"]) == {"val", "test"}
        assert len(pred) == int(tiny_table["split"].isin(["val", "test"]).sum())
        assert list(pred.columns[:3]) == ["image_id", "split", "label"]
        np.testing.assert_allclose(run.probabilities().sum(axis=1), 1.0, atol=1e-5)
        # metrics are those of the predictions
        test = pred[pred["split"] == "test"]
        y = test["label"].astype(str).map({c: i for i, c in enumerate(run.classes)}).to_numpy()
        again = scoring.split_metrics(y, run.probabilities("test"), 7)
        assert run.metrics["test"]["balanced_accuracy"] == pytest.approx(
            again["balanced_accuracy"])
        assert run.metrics["weights"] == m["weights"] and run.metrics["split_hash"]
        assert "val_balanced_accuracy" in run.history.columns
        _check_model_reproduces_predictions(run, tiny_table)


def test_finished_runs_are_reused_not_retrained(mobilenet_runs, tiny_table, tiny_profile):
    runs, out = mobilenet_runs
    stamp = {v: (p / "model.keras").stat().st_mtime_ns for v, p in out.items()}
    job = training.Job(task="ham10000", backbone="mobilenet_025", profile=tiny_profile, runs=runs,
                       table=tiny_table)
    again = training.train(job)
    assert again == out
    assert {v: (p / "model.keras").stat().st_mtime_ns for v, p in again.items()} == stamp
    table = run_folders.runs_table(runs)
    assert set(table["variant"]) == {"frozen", "finetune"}


def test_large_backbone_trains_top_blocks_on_cached_maps(tiny_table, tiny_profile, weights_dir,
                                                         tmp_path):
    """DenseNet121: cached lower-part maps + top blocks; the saved full model agrees."""
    job = training.Job(task="ham10000", backbone="densenet121", profile=tiny_profile,
                       runs=tmp_path, table=tiny_table, variants=("finetune",))
    out = training.train(job)
    run = run_folders.load_run(out["finetune"])
    assert "after pool4_pool" in run.manifest["recipe"]["trained"]
    assert run.manifest["weights"]["sha256"].startswith("f3c6a87655f2a7fc")
    assert list((tmp_path / "features").glob("*maps*.npz"))
    _check_model_reproduces_predictions(run, tiny_table)


def test_the_command_line_trains_a_run_folder(tmp_path, data_root, mobilenet_025_weights):
    """``python -m helpers.training``, as the README gives it, leaves a complete run folder."""
    import os
    import subprocess
    import sys

    env = {**os.environ, config.RUNS_ENV: str(tmp_path), "SKINBOOK_DATA": str(data_root),
           "SKINBOOK_WEIGHTS": str(mobilenet_025_weights.parent)}
    done = subprocess.run([sys.executable, "-m", "helpers.training", "--profile", "smoke",
                           "--backbone", "mobilenet_025", "--variants", "frozen",
                           "--create-split"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=config.REPO_ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    folder = run_folders.find_runs(tmp_path / "smoke", task="ham10000", variant="frozen")
    assert [f.name for f in folder] == ["ham10000__mobilenet_025__frozen"], done.stdout[-2000:]
    assert f"frozen: {folder[0]} test" in done.stdout
    assert run_folders.load_run(folder[0]).metrics["test"]["n"] > 0
    # A run stopped before its last file was written is not a run: no chapter may find it.
    assert run_folders.is_complete(folder[0])
    (folder[0] / "metrics.json").unlink()
    assert run_folders.missing_files(folder[0]) == ["metrics.json"]
    assert run_folders.find_runs(tmp_path / "smoke", task="ham10000") == []


def test_load_run_names_what_is_missing(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(FileNotFoundError, match="missing .*model.keras"):
        run_folders.load_run(tmp_path)


def test_job_rejects_unknown_task_and_variant(tiny_table, tiny_profile, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'isic'"):
        training.Job(task="isic", backbone="mobilenet_025", profile=tiny_profile, runs=tmp_path,
                     table=tiny_table)
    with pytest.raises(ValueError, match="variants must be frozen and/or finetune"):
        training.Job(task="ham10000", backbone="mobilenet_025", profile=tiny_profile,
                     runs=tmp_path, table=tiny_table, variants=("linear",))


def test_split_metrics_agree_with_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet(np.ones(3), size=60)
    probs[np.arange(60), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    m = scoring.split_metrics(y, probs, 3)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr",
                                                       average="macro"))
    yb = (y > 0).astype(int)
    pb = np.column_stack([1 - probs[:, 0], probs[:, 0]])
    assert scoring.split_metrics(yb, pb, 2)["roc_auc"] == pytest.approx(
        roc_auc_score(yb, pb[:, 1]))


def test_plan_runs_chapter_03_once_per_task_and_backbone(tmp_path):
    (tmp_path / "melanoma10k" / "train").mkdir(parents=True)  # melanoma10k is found there
    for name in config.profile_names():
        prof = config.load_profile(name)
        runs = [r for r in book.plan(prof, data_root=tmp_path) if r.chapter == "03"]
        expected = [f"ham10000__{b}" for b in prof.backbones] + \
            [f"melanoma10k__{b}" for b in prof.melanoma_backbones]
        assert [r.suffix for r in runs] == expected
        assert all(r.parameters["profile"] == name for r in runs)
        assert len({r.output(name) for r in runs}) == len(runs)
    smoke = config.load_profile("smoke")
    assert set(smoke.backbones) >= {"densenet121", "inception_v3", "xception", "resnet50",
                                    "mobilenet_v2", "efficientnet_b0", "mobilenet_025"}
    assert smoke.pretraining_backbone in smoke.backbones


def test_predictions_frame_keeps_ids_splits_and_labels(tiny_table):
    rows = tiny_table[tiny_table["split"] != "train"]
    probs = np.full((len(rows), 7), 1 / 7)
    frame = run_folders.predictions_frame(rows, probs, training.TASKS["ham10000"][1])
    assert frame["image_id"].tolist() == rows["image_id"].tolist()
    assert isinstance(frame, pd.DataFrame) and frame.shape[1] == 3 + 7


def test_flip_averaging_is_the_mean_over_the_four_flipped_images(mobilenet_runs, tiny_table):
    _, out = mobilenet_runs
    run = run_folders.load_run(out["finetune"])
    rows = tiny_table[tiny_table["split"] == "test"].reset_index(drop=True)
    model = run.load_model()
    averaged = scoring.predict_images(model, rows, run.classes, run.image_size, flips=True)
    ds = images.make_dataset(rows, run.classes, run.image_size, batch_size=16, cache=False)
    x = np.concatenate([np.asarray(batch) for batch, _ in ds])
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    expected = np.mean([model.predict(v, verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(averaged, expected, atol=2e-4)
    plain = scoring.predict_images(model, rows, run.classes, run.image_size)
    assert not np.allclose(plain, averaged, atol=1e-4)  # the flips do change the probabilities


def test_run_folders_store_four_flip_probabilities(mobilenet_runs, tiny_table):
    _, paths = mobilenet_runs
    run = run_folders.load_run(paths["finetune"])
    for part in ("val", "test"):
        rows = tiny_table.set_index("image_id").loc[
            run.predictions.loc[run.predictions["split"] == part, "image_id"]].reset_index()
        flipped = scoring.predict_images(run.load_model(), rows, run.classes, run.image_size,
                                         flips=True)
        np.testing.assert_allclose(run.probabilities(part, flips=True), flipped, atol=2e-4)
        assert run.metrics[f"{part}_flips"] == pytest.approx(scoring.split_metrics(
            scoring.label_indices(rows, run.classes), flipped, len(run.classes)), abs=1e-6)


def test_a_registry_entry_is_computed_from_the_run_folder(mobilenet_runs, tiny_table):
    """The registry's estimates are the metrics of the run's predictions.csv; its intervals
    resample lesions and contain the estimate."""
    from helpers import metrics, results

    _, paths = mobilenet_runs
    run = run_folders.load_run(paths["finetune"])
    groups = dict(zip(tiny_table["image_id"], tiny_table["group"]))
    entry = results.run_entry(run, groups, rounds=40)
    for part, prefix in (("test", "p_"), ("test_flips", run_folders.FLIP_PREFIX)):
        y, proba = metrics.from_predictions(run.predictions, run.classes, split="test",
                                            prefix=prefix)
        score = entry["scores"][part]["balanced_accuracy"]
        assert score["estimate"] == pytest.approx(metrics.balanced_accuracy(y, proba))
        assert score["low"] <= score["estimate"] <= score["high"]
    assert entry["scores"]["val"]["macro_auc"] == pytest.approx(metrics.macro_auc(
        *metrics.from_predictions(run.predictions, run.classes, split="val")))
    assert entry["seed"] == run.manifest["seed"] and entry["provenance"]["commit"]
    json.dumps(entry)  # the registry is plain JSON


def test_another_seed_gets_its_own_run_folder(mobilenet_runs, tiny_table, tiny_profile):
    runs, paths = mobilenet_runs
    job = training.Job(task="ham10000", backbone="mobilenet_025", profile=tiny_profile, runs=runs,
                       table=tiny_table, seed=7, variants=("frozen",))
    seven = training.train(job)["frozen"]
    assert seven.name == "ham10000__mobilenet_025__frozen__seed7" and seven != paths["frozen"]
    first, other = run_folders.load_run(paths["frozen"]), run_folders.load_run(seven)
    assert (other.manifest["seed"], other.manifest["split_seed"]) == (7, tiny_profile.seed)
    assert other.manifest["split_hash"] == first.manifest["split_hash"]  # same split
    assert not np.allclose(other.probabilities("test"), first.probabilities("test"))


def test_a_chapter_loads_the_default_seed_else_another_seed(mobilenet_runs, tiny_table,
                                                            tiny_profile, tmp_path):
    """ctx.load_run (chapters 04 and 05): a named backbone's default-seed run folder when it
    exists, else its first other seed's, else ChapterOrderError naming chapter 03; no backbone
    named, the run chosen on validation (ctx.studied_run, as in chapters 06, 08 and 09)."""
    import shutil

    import helpers
    from helpers import results

    runs, paths = mobilenet_runs
    profile = dataclasses.replace(tiny_profile, backbones=("mobilenet_v2", "mobilenet_025"))
    ctx = helpers.Context(chapter="05", profile=profile, data_root=tmp_path, runs=runs,
                          figures=tmp_path / "figures")
    assert ctx.load_run("ham10000", "mobilenet_025", "frozen").path == paths["frozen"]
    studied = results.studied_run(runs, "ham10000")  # the test above may have added a seed-7 run
    assert studied in run_folders.find_runs(runs, task="ham10000")
    assert ctx.load_run("ham10000").path == ctx.run_folder("", "ham10000") == studied
    assert ctx.run_folder(paths["frozen"].name, "ham10000") == paths["frozen"]
    with pytest.raises(helpers.ChapterOrderError, match="The run folder 'no_such_run'"):
        ctx.run_folder("no_such_run", "ham10000")
    only_seed = tmp_path / "seed-only"
    (only_seed / "models").mkdir(parents=True)
    seven = training.train(training.Job(  # reused when the test above made it
        task="ham10000", backbone="mobilenet_025", profile=tiny_profile, runs=runs,
        table=tiny_table, seed=7, variants=("frozen",)))["frozen"]
    shutil.copytree(seven, only_seed / "models" / seven.name)
    ctx = dataclasses.replace(ctx, runs=only_seed)
    assert ctx.load_run("ham10000", "mobilenet_025", "frozen").path.name == seven.name
    assert ctx.load_run("ham10000").path.name == seven.name  # the only run there is
    with pytest.raises(helpers.ChapterOrderError, match="--chapters 03"):
        ctx.load_run("ham10000", "mobilenet_025", "finetune")
    with pytest.raises(helpers.ChapterOrderError, match="--chapters 03"):
        ctx.load_run("melanoma10k")  # no melanoma10k run at all
    with pytest.raises(ValueError, match="'resnet50' is not trained in profile pytest; "
                                         "choose one of mobilenet_v2, mobilenet_025"):
        ctx.load_run("ham10000", "resnet50", "frozen")


RESUME_SCRIPT = """
import dataclasses, sys
import pandas as pd
from helpers import config, run_folders, scoring, training
table = pd.read_csv(sys.argv[1], dtype={"image_id": str})
table["label"] = pd.Categorical(table["label"], categories=training.TASKS["ham10000"][1])
profile = dataclasses.replace(config.load_profile("smoke"), name="pytest", image_size=(48, 64),
                              batch_size=16, epochs_head=2, epochs_finetune=3)
training.train(training.Job(task="ham10000", backbone="mobilenet_025", profile=profile,
                            runs=sys.argv[2], table=table, variants=("finetune",)))
"""


def test_an_interrupted_fine_tuning_resumes_from_its_last_epoch(tiny_table, weights_dir,
                                                                tmp_path):
    """Stop a real training process after its first fine-tuning epoch, start it again: it
    resumes after epoch 1 (not from scratch) and finishes with all three epochs' history."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tiny_table.to_csv(tmp_path / "table.csv", index=False)
    command = [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "table.csv"),
               str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # progress bars go to stderr (a file): their carriage returns would read as lines here
    errors = (tmp_path / "stderr.txt").open("w")
    first = subprocess.Popen(command, cwd=config.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=errors, text=True)
    seen, deadline = [], time.monotonic() + 600
    for line in first.stdout:
        seen.append(line)
        if line.startswith("fine-tune epoch 1/3:"):
            first.send_signal(signal.SIGKILL)  # killed hard, as by a closed laptop lid
            break
        assert time.monotonic() < deadline, "".join(seen[-20:])
    first.wait(timeout=60)
    errors.close()
    assert seen and seen[-1].startswith("fine-tune epoch 1/3:"), "".join(seen[-20:])
    folder = tmp_path / "runs" / "models" / "ham10000__mobilenet_025__finetune"
    written = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "runs").rglob("*"))
    assert (folder / "checkpoint" / "backup" / "training_metadata.json").exists(), written
    second = subprocess.run(command, cwd=config.REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming after epoch 1" in second.stdout
    assert "fine-tune epoch 1/3:" not in second.stdout  # epoch 1 was not trained again
    run = run_folders.load_run(folder)
    tuned = run.history[run.history["stage"] == "finetune"]
    assert list(tuned["epoch"]) == [1, 2, 3]
    first_loss = float(seen[-1].split("loss ")[1].split(",")[0])
    assert tuned["loss"].iloc[0] == pytest.approx(first_loss, abs=1e-3)
    assert not (folder / "checkpoint").exists()  # removed once the run folder is complete


def test_predict_and_the_web_app_reproduce_the_runs_predictions(mobilenet_runs, tiny_table,
                                                                tmp_path):
    """Serving parity: the prediction command (.keras and .tflite float32) and the web app, fed
    the original 200x150 files (the model takes 48x64), reproduce the run's predictions.csv.
    Tolerance: each probability within 0.01 and the same top-1 class for every image (the two
    paths share the resize; only the JPEG decoders, TensorFlow's and Pillow's, may differ)."""
    import io

    from helpers import export, predict
    from helpers.webapp import create_app

    _, paths = mobilenet_runs
    run = run_folders.load_run(paths["finetune"])
    test = run.predictions[run.predictions["split"] == "test"]
    files = tiny_table.set_index("image_id").loc[test["image_id"], "path"].tolist()
    expected = run.probabilities("test")
    tflite = export.export_run(run.path, variants=("float32",), out_dir=tmp_path)["float32"]
    app = create_app(run.path / "model.keras").test_client()

    def via_app(path):
        reply = app.post("/api/predict", data={"image": (io.BytesIO(Path(path).read_bytes()),
                                                         "lesion.jpg")})
        assert reply.status_code == 200, reply.get_data(as_text=True)
        return reply.get_json()["probabilities"]

    for name, predictor in (("keras", predict.load(run.path / "model.keras")),
                            ("tflite float32", predict.load(tflite.tflite))):
        got = np.array([[predictor.predict_file(p)["probabilities"][c] for c in run.classes]
                        for p in files])
        np.testing.assert_allclose(got, expected, atol=0.01, err_msg=name)
        assert (got.argmax(1) == expected.argmax(1)).all(), name
    served = np.array([[via_app(p)[c] for c in run.classes] for p in files])
    np.testing.assert_allclose(served, expected, atol=0.01)
    assert (served.argmax(1) == expected.argmax(1)).all()


def test_a_recipe_experiment_gets_its_own_run_folder_name():
    from helpers import backbones as bb

    info = bb.WeightsInfo("file", "x.h5", "abc")
    assert training.variant_name("finetune", info, "imagenet") == "finetune"
    assert training.variant_name("finetune", info, "imagenet", "bn-frozen") == "finetune-bn-frozen"
    assert training.variant_name("frozen", info, None) == "random-init-frozen"
    assert run_folders.run_path(Path("r"), "ham10000", "efficientnet_b0", "finetune-bn-frozen") \
        != run_folders.run_path(Path("r"), "ham10000", "efficientnet_b0", "finetune")
