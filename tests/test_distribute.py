"""Training with tf.distribute, simulated on a CPU: two logical devices, two local workers.

No GPU can be relied on here, so the tests stand in for one: MirroredStrategy over the CPU split
into two logical devices, and MultiWorkerMirroredStrategy over two worker processes on free
ports of 127.0.0.1, each with its own runs folder (as on two machines). Every training is the
real command (``python -m helpers.training``) on the smoke profile's melanoma10k task, MobileNet
0.25, frozen head then one fine-tuning epoch, the same seed. The melanoma10k task is used
because the smoke profile's seven-class HAM10000 task stays near chance, where a broken
distributed run could not be told from a working one.

Tolerances, stated:

* two replicas vs one (global batch 64 vs 32, learning rates x sqrt 2): validation balanced
  accuracy within :data:`VAL_TOLERANCE` (about three of the 31 validation images);
* two workers vs two devices: the same computation (same global batch, same split of each
  batch), so the same probabilities within :data:`SAME_TOLERANCE`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import config, distribute, run_folders, scoring, training

REPO = Path(__file__).resolve().parents[1]
RUN = "melanoma10k__mobilenet_025__finetune"
ARGS = ["--profile", "smoke", "--task", "melanoma10k", "--backbone", "mobilenet_025",
        "--variants", "finetune"]
TIME_LIMIT_S = 900
"""Each training command (or pair of workers) is stopped after this long: a test failure."""
VAL_TOLERANCE = 0.10
SAME_TOLERANCE = 1e-3
SPLIT_ON_CPUS = "from helpers import distribute; distribute.split_cpu(2); "


# --- strategy choice and what follows from it (no TensorFlow runtime) --------------------------

def _cluster(workers: int, chief: bool = False, task: tuple[str, int] = ("worker", 0)) -> dict:
    cluster = {"worker": [f"host{i}:2222" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["boss:2222"]
    return {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}


def test_auto_picks_multi_worker_then_several_gpus_then_one_device():
    assert distribute.choose("auto", config=_cluster(2), gpus=0) == "multi_worker"
    assert distribute.choose("auto", config=_cluster(1, chief=True), gpus=1) == "multi_worker"
    assert distribute.choose("auto", config=_cluster(1), gpus=4) == "mirrored"
    assert distribute.choose("auto", config={}, gpus=1) == "default"
    assert distribute.choose("default", config=_cluster(2), gpus=4) == "default"  # override
    with pytest.raises(ValueError, match="unknown strategy 'horovod'.*multi_worker"):
        distribute.choose("horovod")


def test_the_chief_is_the_chief_task_else_worker_zero():
    assert distribute.is_chief({})
    assert distribute.is_chief(_cluster(2, task=("worker", 0)))
    assert not distribute.is_chief(_cluster(2, task=("worker", 1)))
    assert distribute.is_chief(_cluster(2, chief=True, task=("chief", 0)))
    assert not distribute.is_chief(_cluster(2, chief=True, task=("worker", 0)))
    assert distribute.worker_count(_cluster(2, chief=True)) == 3


def test_local_cluster_names_distinct_free_ports():
    configs = [json.loads(c) for c in distribute.local_cluster(2)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 2 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in (0, 1)]
    assert [distribute.is_chief(c) for c in configs] == [True, False]


def _plan(replicas: int, workers: int = 1, chief: bool = True,
          precision: str = "float32") -> distribute.Plan:
    kind = "multi_worker" if workers > 1 else "mirrored" if replicas > 1 else "default"
    return distribute.Plan(kind=kind, strategy=None, replicas=replicas, workers=workers,
                           chief=chief, devices=("/cpu:0",), precision=precision)


def test_global_batch_and_square_root_learning_rate_rule():
    four = _plan(4)
    assert four.global_batch(32) == 128
    assert four.scaled_lr(3e-4) == pytest.approx(6e-4)
    assert _plan(1).scaled_lr(1e-3) == 1e-3  # one device: the recipe unchanged
    described = _plan(2, workers=2).describe(32)
    assert described["strategy"] == "MultiWorkerMirroredStrategy"
    assert (described["replicas"], described["workers"], described["global_batch"]) == (2, 2, 64)
    assert described["lr_scale"] == pytest.approx(2 ** 0.5)


def test_only_the_chief_writes_into_the_runs_folder(tmp_path):
    assert _plan(2, workers=2).writable(tmp_path) == tmp_path
    scratch = _plan(2, workers=2, chief=False).writable(tmp_path)
    assert scratch.is_dir() and tmp_path not in scratch.parents and scratch != tmp_path
    assert not _plan(2, workers=2).single_worker and _plan(2).single_worker


def test_mixed_precision_only_with_a_gpu_and_the_head_stays_float32(capsys):
    import keras

    assert distribute.precision(True, gpus=1) == "mixed_float16"
    assert distribute.precision(False, gpus=8) == "float32"
    assert distribute.precision(True, gpus=0) == "float32"
    assert "no GPU is visible" in capsys.readouterr().out
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(3)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(hidden))
        _plan(1, precision="mixed_float16").float32_output(model.get_layer("head"))
        out = model(np.ones((2, 4), dtype=np.float32))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[1].compute_dtype == "float16" and str(out.dtype.name) == "float32"


def test_profiles_default_to_auto_and_float32():
    for name in config.profile_names():
        prof = config.load_profile(name)
        assert prof.strategy in distribute.KINDS and prof.mixed_precision is False


def test_image_input_is_sharded_by_data():
    import tensorflow as tf

    ds = distribute.shard_by_data(tf.data.Dataset.range(4))
    assert ds.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.DATA


def test_the_command_rejects_an_unknown_strategy(capsys):
    with pytest.raises(SystemExit) as stop:
        training.main(["--backbone", "mobilenet_025", "--strategy", "nope"])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


# --- real trainings: one device, two logical devices, two workers ------------------------------

def _env(runs: Path, weights: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(SKINBOOK_RUNS=str(runs), SKINBOOK_WEIGHTS=str(weights), SKINBOOK_OFFLINE="1",
               TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _run(code: str, env: dict) -> None:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=TIME_LIMIT_S, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _command(args: list[str], before: str = "") -> str:
    return f"{before}from helpers import training; raise SystemExit(training.main({args!r}))"


def _runs_like(reference: Path, base: Path) -> Path:
    """A runs folder holding the reference's split and thumbnails (what chapter 02 leaves)."""
    for name in ("splits", "thumbnails"):
        shutil.copytree(reference / "smoke" / name, base / "smoke" / name)
    return base


@pytest.fixture(scope="module")
def weights(mobilenet_025_weights, melanoma_dir) -> Path:
    return mobilenet_025_weights.parent


@pytest.fixture(scope="module")
def single(weights, tmp_path_factory) -> Path:
    """The single-device reference run (it also makes the split the others copy)."""
    base = tmp_path_factory.mktemp("single")
    _run(_command([*ARGS, "--create-split", "--strategy", "default"]), _env(base, weights))
    return base


@pytest.fixture(scope="module")
def mirrored(single, weights, tmp_path_factory) -> Path:
    base = _runs_like(single, tmp_path_factory.mktemp("mirrored"))
    _run(_command([*ARGS, "--strategy", "mirrored"], SPLIT_ON_CPUS), _env(base, weights))
    return base


@pytest.fixture(scope="module")
def two_workers(single, weights, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two worker processes (``auto`` finds TF_CONFIG); returns (chief runs, other runs,
    the other's temp folder)."""
    bases = [_runs_like(single, tmp_path_factory.mktemp(f"worker{i}")) for i in (0, 1)]
    temp = tmp_path_factory.mktemp("worker1_tmp")
    procs = []
    try:
        for i, tf_config in enumerate(distribute.local_cluster(2)):
            env = _env(bases[i], weights, TF_CONFIG=tf_config,
                       **({"TMPDIR": str(temp)} if i else {}))
            procs.append(subprocess.Popen([sys.executable, "-c", _command(ARGS)], env=env,
                                          cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + TIME_LIMIT_S
        logs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    assert "This worker is the chief" in logs[0] and "This worker writes nothing" in logs[1]
    return bases[0], bases[1], temp


def _run_folder(base: Path) -> run_folders.RunFolder:
    return run_folders.load_run(base / "smoke" / "models" / RUN)


def _val_balanced_accuracy(base: Path) -> float:
    return _run_folder(base).metrics["val"]["balanced_accuracy"]


def test_one_device_run_records_the_default_strategy(single):
    dist = _run_folder(single).manifest["distribution"]
    assert dist["strategy"] == "default" and dist["replicas"] == 1
    assert dist["global_batch"] == dist["per_replica_batch"] == 32 and dist["lr_scale"] == 1.0


def test_two_logical_devices_train_like_one(mirrored, single):
    run = _run_folder(mirrored)
    dist = run.manifest["distribution"]
    assert dist["strategy"] == "MirroredStrategy" and dist["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in dist["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert dist["global_batch"] == 64 and dist["precision"] == "float32"
    assert run.manifest["split_hash"] == _run_folder(single).manifest["split_hash"]
    assert abs(_val_balanced_accuracy(mirrored) - _val_balanced_accuracy(single)) <= VAL_TOLERANCE


def test_two_workers_train_one_run_written_by_the_chief(two_workers, single, mirrored):
    chief, other, other_tmp = two_workers
    models = chief / "smoke" / "models"
    assert [p.name for p in models.iterdir()] == [RUN]
    assert not (models / RUN / "checkpoint").exists()
    # the other worker wrote no run, cache or checkpoint, and its scratch folder is gone
    assert sorted(p.name for p in (other / "smoke").iterdir()) == ["splits", "thumbnails"]
    assert list(other_tmp.iterdir()) == []
    run = _run_folder(chief)
    dist = run.manifest["distribution"]
    assert dist["strategy"] == "MultiWorkerMirroredStrategy"
    assert (dist["replicas"], dist["workers"], dist["global_batch"]) == (2, 2, 64)
    assert run.manifest["split_hash"] == _run_folder(single).manifest["split_hash"]
    assert abs(_val_balanced_accuracy(chief) - _val_balanced_accuracy(single)) <= VAL_TOLERANCE
    # two workers compute what two devices compute
    np.testing.assert_allclose(run.probabilities(), _run_folder(mirrored).probabilities(),
                               atol=SAME_TOLERANCE)


def test_the_chiefs_predictions_are_its_models_in_row_order(two_workers, data_root):
    """Distributed predict gathers the workers' shares; the saved model, run on one device,
    must give the same probabilities for the same rows."""
    from helpers import datasets

    run = _run_folder(two_workers[0])
    val = run.predictions[run.predictions["split"] == "val"].reset_index(drop=True)
    paths = datasets.load_melanoma10k(data_root).set_index("image_id")["path"]
    table = val.assign(path=paths.loc[val["image_id"]].to_numpy())
    probs = scoring.predict_images(run.load_model(), table, run.classes, run.image_size)
    np.testing.assert_allclose(probs, run.probabilities("val"), atol=2e-4)
