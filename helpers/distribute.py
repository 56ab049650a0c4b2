"""Training on several GPUs or machines with TensorFlow's own engine, ``tf.distribute``.

Which strategy trains (:func:`choose`; ``auto`` tries them in this order)::

    multi_worker  MultiWorkerMirroredStrategy: TF_CONFIG names several workers (one process per
                  machine, every one running the same command; the chief writes the results)
    mirrored      MirroredStrategy: several GPUs in one machine (or, in the tests, the logical
                  CPU devices made by :func:`split_cpu`)
    default       TensorFlow's default strategy: one device, the book on a laptop

A profile's ``strategy`` key (``book/profiles.yml``) or ``python -m helpers.training
--strategy`` picks one by name instead of ``auto``.

What follows from the strategy (:class:`Plan`, made by :func:`plan_for`):

* **batch** — a profile's ``batch_size`` is the batch *per replica*; every step takes the global
  batch, ``batch_size x replicas`` images, and TensorFlow splits it across the replicas.
* **learning rate** — scaled by the square root of the replicas, ``lr x sqrt(replicas)``
  (the global batch grew by that many times). Linear scaling is the rule for SGD; the book trains
  with Adam and AdamW, for which the square-root rule keeps training comparable (Malladi et
  al., NeurIPS 2022), and fine-tuning keeps its one-epoch warm-up.
* **writes** — only the chief writes run folders, feature caches and checkpoints; another worker
  writes into a scratch folder removed when its process exits (TensorFlow's multi-worker
  guide). Several workers neither reuse finished runs nor resume interrupted ones: every
  worker must run the same ``fit`` calls, and only the chief would find those files.
* **precision** — with ``mixed_precision: true`` and a GPU visible, Keras' ``mixed_float16``
  policy (the softmax head stays float32); on a CPU it stays float32, with a message.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("auto", "default", "mirrored", "multi_worker")
"""Values of a profile's ``strategy`` key and of ``--strategy``."""

NAMES = {"default": "default", "mirrored": "MirroredStrategy",
         "multi_worker": "MultiWorkerMirroredStrategy"}
"""Strategy kind -> the name run manifests record."""

LR_RULE = "square root: lr x sqrt(replicas)"

_STRATEGIES: dict[str, Any] = {}
"""Strategies made in this process, by kind (a multi-worker one can only be made once)."""


# --- reading TF_CONFIG (no TensorFlow needed) ---------------------------------------------------

def tf_config(raw: str | None = None) -> dict:
    """``$TF_CONFIG`` (or ``raw``) as a dict; ``{}`` when unset."""
    raw = os.environ.get("TF_CONFIG", "") if raw is None else raw
    return json.loads(raw) if raw.strip() else {}


def worker_count(config: dict) -> int:
    """How many training processes a TF_CONFIG names (its chief and workers)."""
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(config: dict) -> bool:
    """TensorFlow's rule: the task typed ``chief``, else worker 0 when the cluster has no chief;
    a process without TF_CONFIG (or without a task) is its own chief."""
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def local_cluster(workers: int) -> list[str]:
    """TF_CONFIG values for ``workers`` processes on this machine, one per worker, on free ports
    of 127.0.0.1 (how the tests and ``bench/bench_distribute.py`` stand in for machines)."""
    probes = [socket.socket() for _ in range(workers)]
    try:  # all bound at once, so no port is handed out twice
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        ports = [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def choose(requested: str = "auto", *, config: dict | None = None,
           gpus: int | None = None) -> str:
    """The strategy kind for ``requested`` (one of :data:`KINDS`).

    ``auto``: ``multi_worker`` when TF_CONFIG names several workers, ``mirrored`` when several
    GPUs are visible, else ``default``. ``config`` and ``gpus`` default to ``$TF_CONFIG`` and
    the GPUs TensorFlow sees.
    """
    if requested not in KINDS:
        raise ValueError(f"unknown strategy {requested!r}: use one of {', '.join(KINDS)}")
    if requested != "auto":
        return requested
    if worker_count(tf_config() if config is None else config) > 1:
        return "multi_worker"
    return "mirrored" if (_gpu_count() if gpus is None else gpus) > 1 else "default"


def _gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


# --- making strategies --------------------------------------------------------------------------

def split_cpu(devices: int) -> None:
    """Split the CPU into ``devices`` logical devices (to simulate several GPUs on a CPU).

    Must run before TensorFlow starts its runtime (before any op or strategy).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    except RuntimeError as err:
        raise RuntimeError(f"split_cpu({devices}) must run before TensorFlow starts: {err}") from err


def strategy(kind: str):
    """The ``tf.distribute`` strategy of ``kind`` (made once per process, then reused).

    ``mirrored`` mirrors over the visible GPUs, else over the logical CPU devices (one unless
    :func:`split_cpu` made more).
    """
    import tensorflow as tf

    kind = choose(kind)
    if kind in _STRATEGIES:
        return _STRATEGIES[kind]
    if kind == "default":
        made = tf.distribute.get_strategy()
    elif kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        made = tf.distribute.MirroredStrategy([d.name for d in devices])
    else:
        try:
            made = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be made before TensorFlow runs its first op: "
                "start training with `python -m helpers.training ...` (or call "
                "helpers.distribute.strategy('multi_worker') first in a fresh kernel)") from err
        _patch_keras_multi_worker()
    _STRATEGIES[kind] = made
    return made


def _patch_keras_multi_worker() -> None:
    """Two repairs to Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy.

    Without them ``fit`` fails before its first step (keras-team/keras#20585, open for Keras 3.x
    up to 3.15 here): to learn the input shapes the trainer averages a whole batch *structure*
    across workers, which the collective strategy cannot ("Attempt to convert a value
    (PerReplica ...) to a Tensor"); then it averages each step's scalar logs with ``axis=0``
    ("Invalid reduction dimension 0"). Here the shapes come from this worker's own replica batch
    and logs are averaged across workers elementwise. Other strategies are left untouched.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_skinbook_multi_worker", False):
        return
    build, reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    multi = tf.distribute.MultiWorkerMirroredStrategy

    def local(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build_from_local_batch(self, iterator=None, data_batch=None):
        strat = self._distribute_strategy
        if iterator is not None and isinstance(strat, multi):
            for _, _, it in iterator:  # the first batch, as Keras does
                data_batch = tree.map_structure(lambda v: local(strat, v), next(it))
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    def reduce_logs(values, strat, reduction):
        if reduction in ("auto", "mean") and isinstance(strat, multi):
            return tree.map_structure(lambda v: strat.reduce("MEAN", v, axis=None), values)
        return reduce(values, strat, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    trainer.reduce_per_replica = reduce_logs
    trainer._skinbook_multi_worker = True


# --- what a strategy changes --------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """One process's part in a training: its strategy and what follows from it."""

    kind: str
    strategy: Any
    replicas: int
    workers: int
    chief: bool
    devices: tuple[str, ...]
    precision: str
    """Keras dtype policy: ``float32`` or ``mixed_float16``."""

    def global_batch(self, per_replica: int) -> int:
        """Images per step over all replicas: ``per_replica x replicas``."""
        return per_replica * self.replicas

    def scaled_lr(self, lr: float) -> float:
        """``lr x sqrt(replicas)`` (:data:`LR_RULE`)."""
        return lr * math.sqrt(self.replicas)

    @property
    def single_worker(self) -> bool:
        """One process: finished runs may be reused and interrupted ones resumed."""
        return self.workers == 1

    def writable(self, runs: Path) -> Path:
        """Where this process writes: ``runs`` on the chief, else a scratch folder removed at
        exit."""
        if self.chief:
            return Path(runs)
        scratch = Path(tempfile.mkdtemp(prefix="skinbook-worker-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return scratch

    def float32_output(self, layer) -> None:
        """Under ``mixed_float16``, compute ``layer`` (the softmax head) in float32, as Keras
        recommends for a model's last layer."""
        if self.precision == "mixed_float16":
            layer.dtype_policy = "float32"

    def describe(self, per_replica_batch: int) -> dict:
        """What a run manifest records about the distribution."""
        return {"strategy": NAMES[self.kind], "replicas": self.replicas, "workers": self.workers,
                "devices": list(self.devices), "per_replica_batch": per_replica_batch,
                "global_batch": self.global_batch(per_replica_batch),
                "lr_scale": round(self.scaled_lr(1.0), 6), "lr_rule": LR_RULE,
                "precision": self.precision}

    def summary(self, per_replica_batch: int) -> str:
        """One line for the training log."""
        role = "" if self.single_worker else (" This worker is the chief (it writes the run)."
                                              if self.chief else " This worker writes nothing.")
        return (f"Distribution: {NAMES[self.kind]}, {self.replicas} replica(s) on "
                f"{self.workers} worker(s); global batch {self.global_batch(per_replica_batch)} "
                f"({per_replica_batch} per replica); learning rates x{self.scaled_lr(1.0):.3g}; "
                f"{self.precision}.{role}")


def precision(mixed: bool, gpus: int) -> str:
    """The Keras dtype policy: ``mixed_float16`` when asked for and a GPU is visible."""
    if mixed and gpus == 0:
        print("mixed_precision is on in the profile but no GPU is visible: training in float32 "
              "(float16 on a CPU is slower, not faster).")
    return "mixed_float16" if mixed and gpus > 0 else "float32"


def plan_for(profile) -> Plan:
    """The plan for a profile's ``strategy`` and ``mixed_precision`` keys.

    Sets Keras' global dtype policy (float32 unless mixed precision applies), so call it before
    building the model.
    """
    import keras

    kind = choose(profile.strategy)
    made = strategy(kind)
    replicas = int(made.num_replicas_in_sync)
    if kind == "default":
        import tensorflow as tf

        devices = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
        local = (devices[0].name,)
    else:
        local = tuple(made.extended.worker_devices)
    policy = precision(profile.mixed_precision, _gpu_count())
    keras.mixed_precision.set_global_policy(policy)
    return Plan(kind=kind, strategy=made, replicas=replicas,
                workers=max(1, replicas // len(local)),
                chief=kind != "multi_worker" or is_chief(tf_config()),
                devices=local, precision=policy)


def shard_by_data(dataset):
    """``dataset`` with auto-sharding by data: every worker reads the same pipeline and keeps
    its share of the elements (the book's inputs are image lists, not one file per worker)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
