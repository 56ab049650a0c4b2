"""Benchmark the TFLite export of one run folder: size, latency, agreement, metric change.

    nice -n 10 python bench/bench_tflite.py --run book/runs/laptop/models/ham10000__mobilenet_025__finetune
    python bench/bench_tflite.py --run RUN --split-csv my_split.csv   # a table with path,label,split

Converts the run's model.keras to float32 / float16 / full-integer int8 (calibrated on training
images) into a temporary folder (the run folder is not touched), then prints the comparison
table of :func:`helpers.export.compare` on the test split and checks chapter 06's targets:
int8 at most 1/3 of the float32 file, balanced accuracy within 1 point of float32, and faster
than float32. Exit status 1 if a target is missed. Timings: median of batch-1 calls, LiteRT
with 2 threads; on a shared machine repeat the run before trusting a few percent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def test_table(run: Path, profile: str, split_csv: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    import helpers

    manifest = json.loads((run / "manifest.json").read_text())
    if split_csv is not None:
        table = pd.read_csv(split_csv)
    else:
        ctx = helpers.setup("bench", profile)
        table = ctx.samples(manifest.get("dataset", manifest["task"]))
    return table[table["split"] == "train"], table[table["split"] == "test"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with model.keras")
    parser.add_argument("--profile", default=None, help="profile for the split (default: manifest's)")
    parser.add_argument("--split-csv", type=Path, help="sample table with path, label, split")
    parser.add_argument("--calibration", type=int, default=200, help="training images for int8")
    parser.add_argument("--latency-images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from helpers import export, images

    manifest = export.read_manifest(args.run)
    classes, size = manifest["classes"], tuple(manifest["image_size"])
    train, test = test_table(args.run, args.profile or manifest["profile"], args.split_csv)
    rng = np.random.default_rng(0)
    calib_rows = train.iloc[rng.permutation(len(train))[:args.calibration]]
    calibration = images.load_batch(list(calib_rows["path"]), size)
    x = np.concatenate([b[0].numpy() for b in images.make_dataset(test, classes, size, cache=False)])
    y = test["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    model = export.load_keras(args.run)
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        exported = export.export_run(args.run, calibration, out_dir=tmp, model=model)
        table = export.compare(model, exported, x, y, keras_path=args.run / "model.keras",
                               latency_images=args.latency_images, repeats=args.repeats)
    print(f"run {args.run} | {manifest.get('backbone')} {size[1]}x{size[0]} | "
          f"{len(x)} test images, {len(calibration)} calibration images")
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table.to_string())
    f32, i8 = table.loc["tflite float32"], table.loc["tflite int8"]
    checks = {
        "int8 size <= 1/3 float32": i8.size_mb <= f32.size_mb / 3,
        "int8 balanced accuracy within 1 point of float32":
            abs(i8.balanced_accuracy - f32.balanced_accuracy) <= 0.01,
        "int8 faster than float32": i8.latency_ms < f32.latency_ms,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
