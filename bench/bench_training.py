"""Training speed benchmarks (speed targets live here, not in the tests).

    python bench/bench_training.py                      # laptop image size, default sizes
    python bench/bench_training.py --profile smoke --images 128 --steps 3

Measures, in one run, on the real HAM10000 images:

(a) head training on cached frozen-backbone features vs fitting the same head *through* the
    frozen backbone (time for the same number of epochs, caching cost included; ratio);
(b) the tf.data pipeline (``helpers.images.make_dataset``) vs a plain per-image PIL loop
    (images/s for decoding + resizing + batching; ratio);
(c) training and inference images/s per backbone at the profile's image size, as ratios to the
    first backbone listed (training in the fine-tuning setting of the
    book: whole network for small backbones, top blocks for large ones, batch norm training,
    the recipe's optimizer);
(d) the same for one backbone with TensorFlow's oneDNN kernels on (the default, and the book's)
    and off (``TF_ENABLE_ONEDNN_OPTS=0``); TensorFlow reads the switch when it starts, so each
    side runs in a fresh process (ratio).

Numbers depend on the machine and on what else runs on it: say which when you quote them.
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

import numpy as np  # noqa: E402


def _sample(n: int, seed: int):
    from helpers import config, datasets

    table = datasets.load_ham10000(config.data_root())
    return table.sample(n, random_state=seed).reset_index(drop=True)


def bench_feature_cache(table, size, backbone: str, epochs: int, batch: int) -> dict:
    import keras

    from helpers import backbones, feature_cache, images, scoring, training

    classes = list(training.TASKS["ham10000"][1])
    model, _ = backbones.build_model(backbone, size, len(classes), weights="imagenet")
    backbones.set_trainable(model, backbone, "frozen")
    y = scoring.label_indices(table, classes)
    ds = images.make_dataset(table, classes, size, batch_size=batch, cache=True)
    for _ in ds:  # decode once so both sides start from cached pixels
        pass

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(ds.take(1), epochs=1, verbose=0)  # trace outside the timing
    tick = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    through = time.perf_counter() - tick

    tick = time.perf_counter()
    pooled = feature_cache.extractor(model, backbone)
    feats = np.concatenate([np.asarray(pooled(x, training=False)) for x, _ in ds])
    cache = time.perf_counter() - tick
    inputs = keras.Input(feats.shape[1:])
    head = keras.Model(inputs, model.get_layer("head")(model.get_layer("dropout")(inputs)))
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    head.fit(feats[:batch], y[:batch], epochs=1, verbose=0)
    tick = time.perf_counter()
    head.fit(feats, y, batch_size=batch, epochs=epochs, verbose=0)
    on_cache = time.perf_counter() - tick
    return {"backbone": backbone, "images": len(table), "epochs": epochs,
            "through_backbone_s": through, "cache_once_s": cache, "head_on_cache_s": on_cache,
            "ratio_epochs": through / max(on_cache, 1e-9),
            "ratio_incl_cache": through / (cache + on_cache)}


def bench_pipeline(table, size, batch: int) -> dict:
    from helpers import images, training

    classes = list(training.TASKS["ham10000"][1])
    paths = table["path"].tolist()
    tick = time.perf_counter()
    for i in range(0, len(paths), batch):
        images.load_batch(paths[i:i + batch], size)
    pil = len(paths) / (time.perf_counter() - tick)
    ds = images.make_dataset(table, classes, size, batch_size=batch, cache=False)
    tick = time.perf_counter()
    n = sum(int(x.shape[0]) for x, _ in ds)
    tfdata = n / (time.perf_counter() - tick)
    return {"images": len(paths), "pil_loop_img_s": pil, "tf_data_img_s": tfdata,
            "ratio": tfdata / pil}


def bench_backbone(name: str, x: np.ndarray, y: np.ndarray, steps: int) -> dict:
    from helpers import backbones, fitting

    model, _ = backbones.build_model(name, x.shape[1:3], 7, weights=None)
    mode = "all" if backbones.get(name).small else "top"
    recipe = fitting.recipe_for(name)
    backbones.set_trainable(model, name, mode, bn_momentum=recipe.bn_momentum)
    fitting.compile_finetune(model, recipe, steps_per_epoch=steps, epochs=1)
    y = np.eye(7, dtype=np.float32)[y]  # the recipe's loss takes one-hot labels
    model.train_on_batch(x, y)  # trace
    tick = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - tick
    model.predict_on_batch(x)  # trace inference
    tick = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(x)
    inference = time.perf_counter() - tick
    return {"backbone": name, "trained": mode, "img_s": steps * len(x) / seconds,
            "step_s": seconds / steps, "infer_img_s": steps * len(x) / inference}


def training_batch(profile: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch of real HAM10000 images at the profile's size, and labels cycling 0-6."""
    from helpers import config, images

    size = config.load_profile(profile).image_size
    x = images.load_batch(_sample(batch, seed=0)["path"].tolist(), size)
    return x, np.arange(len(x)) % 7


def bench_onednn(name: str, profile: str, batch: int, steps: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, 'bench'); import bench_training as b; "
            f"x, y = b.training_batch({profile!r}, {batch}); "
            f"print(json.dumps(b.bench_backbone({name!r}, x, y, {steps})))")
    speed = {}
    for onednn in ("1", "0"):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1], check=False)
        if done.returncode != 0:
            raise RuntimeError(f"oneDNN={onednn} run failed:\n{done.stderr[-2000:]}")
        speed[onednn] = json.loads(done.stdout.strip().splitlines()[-1])["img_s"]
    return {"backbone": name, "on_img_s": speed["1"], "off_img_s": speed["0"],
            "ratio": speed["1"] / speed["0"]}


def main(argv=None) -> int:
    from helpers import backbones, config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="laptop", help="image size from this profile")
    parser.add_argument("--images", type=int, default=256, help="images for (a) and (b)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed in (a)")
    known = list(backbones.REGISTRY)
    parser.add_argument("--cache-backbone", default="mobilenet_v2", choices=known,
                        help="backbone for (a)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps in (c)")
    parser.add_argument("--backbones", nargs="+", choices=known,
                        default=["mobilenet_075", "mobilenet_025", "mobilenet_v2",
                                 "efficientnet_b0", "densenet121", "resnet50", "inception_v3",
                                 "xception"])
    parser.add_argument("--onednn-backbone", default="mobilenet_075", choices=known,
                        help="backbone for (d)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d"])
    args = parser.parse_args(argv)
    size = config.load_profile(args.profile).image_size
    table = _sample(args.images, seed=0)
    print(f"bench_training | {platform.node()} | {os.cpu_count()} CPU(s) | load average "
          f"{os.getloadavg()[0]:.1f} | image size {size[0]}x{size[1]} ({args.profile})")
    print("Timings are noisy when other jobs share the CPU: quote them with the machine.\n")

    if "a" not in args.skip:
        r = bench_feature_cache(table, size, args.cache_backbone, args.epochs, args.batch)
        print(f"(a) {r['epochs']} head epochs on {r['images']} images, {r['backbone']}:")
        print(f"    through the frozen backbone  {r['through_backbone_s']:7.1f} s")
        print(f"    cache features once          {r['cache_once_s']:7.1f} s")
        print(f"    head on cached features      {r['head_on_cache_s']:7.2f} s")
        print(f"    ratio per epoch {r['ratio_epochs']:.0f}x; including the caching pass "
              f"{r['ratio_incl_cache']:.1f}x (grows with the number of epochs)\n")
    if "b" not in args.skip:
        r = bench_pipeline(table, size, args.batch)
        print(f"(b) decode + resize + batch {r['images']} images (no cache):")
        print(f"    plain PIL loop  {r['pil_loop_img_s']:7.0f} img/s")
        print(f"    tf.data         {r['tf_data_img_s']:7.0f} img/s   ratio {r['ratio']:.1f}x\n")
    if "c" not in args.skip:
        x, y = training_batch(args.profile, args.batch)
        print(f"(c) training and inference images/s at {size[0]}x{size[1]}, batch "
              f"{args.batch} (random init; speed does not depend on the weights); ratios to "
              f"{backbones.get(args.backbones[0]).display}:")
        first = None
        for name in args.backbones:
            r = bench_backbone(name, x, y, args.steps)
            first = first or r
            print(f"    {backbones.get(name).display:26s} train {r['trained']:4s} "
                  f"{r['img_s']:7.1f} img/s ({r['img_s'] / first['img_s']:.2f}x)  inference "
                  f"{r['infer_img_s']:7.1f} img/s ({r['infer_img_s'] / first['infer_img_s']:.2f}x)",
                  flush=True)
    if "d" not in args.skip:
        r = bench_onednn(args.onednn_backbone, args.profile, args.batch, args.steps)
        print(f"\n(d) {backbones.get(r['backbone']).display} training, TensorFlow's oneDNN "
              f"kernels on vs off:")
        print(f"    on  (default)            {r['on_img_s']:7.1f} img/s")
        print(f"    off (ONEDNN_OPTS=0)      {r['off_img_s']:7.1f} img/s   ratio {r['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
