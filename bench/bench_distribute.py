"""Two local workers against one: fine-tuning throughput with tf.distribute (smoke profile).

    python bench/bench_distribute.py                     # MobileNet 0.25, 32 images per replica
    python bench/bench_distribute.py --backbone mobilenet_v2 --steps 6

Each side runs in fresh processes and fine-tunes the book's way (whole network for small
backbones, batch norm training, the recipe's AdamW schedule) on real HAM10000 images at the
smoke profile's size, with augmentation:

* one worker: TensorFlow's default strategy, a global batch of ``--batch`` images;
* two workers: two processes on 127.0.0.1 (TF_CONFIG on free ports, MultiWorkerMirroredStrategy),
  ``--batch`` images per replica, so a global batch of twice that.

It prints images per second of the second, timed epoch (the first one traces the step and
decodes the images) and the ratio two/one. On one CPU both workers share the same cores and add
an all-reduce between processes each step, so expect a ratio at or below 1: on a CPU this bench
shows that the distributed path runs and what it costs, not a speed-up. Correctness is what the
tests check (tests/test_distribute.py); on several GPUs or machines each worker brings its own
devices. Numbers depend on the machine and on what else runs on it: quote them with both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(kind: str, backbone: str, steps: int, batch: int) -> dict:
    """Fine-tune ``backbone`` for a warm-up epoch and a timed one of ``steps`` steps under the
    strategy ``kind``; images per second of the timed epoch."""
    from helpers import distribute

    strategy = distribute.strategy(kind)  # first: a multi-worker strategy precedes any op
    import keras
    import tensorflow as tf

    from helpers import backbones, config, datasets, fitting, images, training

    prof = config.load_profile("smoke")
    classes = list(training.TASKS["ham10000"][1])
    global_batch = batch * strategy.num_replicas_in_sync
    table = datasets.subsample(datasets.load_ham10000(config.data_root()), prof.max_images,
                               seed=prof.seed)
    if steps * global_batch > len(table):
        raise SystemExit(f"{steps} steps of {global_batch} images need more than the smoke "
                         f"profile's {len(table)} images: use fewer --steps")
    ds = images.make_dataset(table.head(steps * global_batch), classes, prof.image_size,
                             batch_size=global_batch, training=True, augment=True,
                             seed=prof.seed)
    ds = distribute.shard_by_data(ds.map(lambda x, y: (x, tf.one_hot(y, len(classes)))).repeat())
    recipe = fitting.recipe_for(backbone)
    with strategy.scope():
        model, _ = backbones.build_model(backbone, prof.image_size, len(classes), weights=None)
        backbones.set_trainable(model, backbone, "auto", pretrained=False,
                                bn_momentum=recipe.bn_momentum)
        fitting.compile_finetune(model, recipe, steps_per_epoch=steps, epochs=2)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.tick = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.tick)

    timer = EpochTimer()
    model.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return {"kind": kind, "replicas": int(strategy.num_replicas_in_sync),
            "global_batch": global_batch, "steps": steps, "warmup_s": timer.seconds[0],
            "timed_s": timer.seconds[1], "img_s": steps * global_batch / timer.seconds[1]}


def _worker_command(kind: str, args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--backbone",
            args.backbone, "--steps", str(args.steps), "--batch", str(args.batch)]


def _result(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def run_one(args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    done = subprocess.run(_worker_command("default", args), env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"one-worker run failed:\n{done.stderr[-3000:]}")
    return _result(done.stdout)


def run_two(args) -> dict:
    from helpers import distribute

    procs = []
    try:
        for tf_config in distribute.local_cluster(2):
            procs.append(subprocess.Popen(_worker_command("multi_worker", args),
                                          env={**os.environ, "TF_CONFIG": tf_config}, cwd=REPO,
                                          text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        deadline = time.monotonic() + args.timeout
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise RuntimeError(f"worker {i} failed:\n{err[-3000:]}")
    return _result(outputs[0][0])  # the chief's numbers (both workers time the same steps)


def main(argv: list[str] | None = None) -> int:
    from helpers import backbones, config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_025", choices=list(backbones.REGISTRY))
    parser.add_argument("--steps", type=int, default=4, help="steps in each epoch")
    parser.add_argument("--batch", type=int, default=32, help="images per replica")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per side")
    parser.add_argument("--worker", choices=["default", "multi_worker"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.backbone, args.steps, args.batch)))
        return 0
    size = config.load_profile("smoke").image_size
    print(f"bench_distribute | {platform.node()} | {os.cpu_count()} CPU(s) | load average "
          f"{os.getloadavg()[0]:.1f} | smoke profile {size[0]}x{size[1]} | "
          f"{backbones.get(args.backbone).display}, {args.batch} images per replica")
    one, two = run_one(args), run_two(args)
    for label, r in (("one worker  (default strategy)", one),
                     ("two workers (MultiWorkerMirroredStrategy, 127.0.0.1)", two)):
        print(f"{label:54s} global batch {r['global_batch']:3d}: {r['img_s']:6.1f} img/s "
              f"({r['steps']} steps in {r['timed_s']:.1f} s; warm-up epoch {r['warmup_s']:.0f} s)")
    print(f"ratio two/one: {two['img_s'] / one['img_s']:.2f}x")
    print("Both workers share this machine's CPU cores: the ratio is the cost of the distributed "
          "path here, not the speed-up of two machines. The point on a CPU is correctness "
          "(tests/test_distribute.py).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
