"""Benchmark the TFLite export of run folders: size, latency, agreement, metric change.

    nice -n 10 python bench/bench_tflite.py --run book/runs/laptop/models/ham10000__mobilenet_025__finetune
    python bench/bench_tflite.py --run RUN --split-csv my_split.csv   # a table with path,label,split
    python bench/bench_tflite.py --run RUN_A RUN_B ...   # several candidates; ratios to RUN_A

Several runs (chapter 03 runs or chapter 09's derived folders, e.g. the distilled student) are
measured in one process, one after the other, and a last table gives each candidate's int8
latency and balanced accuracy as ratios of the first one's.

Converts the run's model.keras to float32 / float16 / full-integer int8 (calibrated on training
images) into a temporary folder (the run folder is not touched), then prints the comparison
table of :func:`helpers.export.compare` on the test split and checks chapter 07's targets:
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


def bench_run(run: Path, args) -> pd.DataFrame:
    """Export one run folder to every TFLite variant in a temporary folder; its table."""
    from helpers import export, images

    manifest = export.read_manifest(run)
    classes, size = manifest["classes"], tuple(manifest["image_size"])
    train, test = test_table(run, args.profile or manifest["profile"], args.split_csv)
    rng = np.random.default_rng(0)
    calib_rows = train.iloc[rng.permutation(len(train))[:args.calibration]]
    calibration = images.load_batch(list(calib_rows["path"]), size)
    x = np.concatenate([b[0].numpy() for b in images.make_dataset(test, classes, size, cache=False)])
    y = test["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    model = export.load_keras(run)
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        exported = export.export_run(run, calibration, out_dir=tmp, model=model)
        table = export.compare(model, exported, x, y, keras_path=run / "model.keras",
                               latency_images=args.latency_images, repeats=args.repeats)
    print(f"run {run} | {manifest.get('backbone')} {size[1]}x{size[0]} | "
          f"{len(x)} test images, {len(calibration)} calibration images")
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table.to_string())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, nargs="+",
                        help="run folder(s) with model.keras (the first is the reference)")
    parser.add_argument("--profile", default=None, help="profile for the split (default: manifest's)")
    parser.add_argument("--split-csv", type=Path, help="sample table with path, label, split")
    parser.add_argument("--calibration", type=int, default=200, help="training images for int8")
    parser.add_argument("--latency-images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    ok = True
    summary = {}
    for run in args.run:
        table = bench_run(run, args)
        f32, i8 = table.loc["tflite float32"], table.loc["tflite int8"]
        checks = {
            "int8 size <= 1/3 float32": i8.size_mb <= f32.size_mb / 3,
            "int8 balanced accuracy within 1 point of float32":
                abs(i8.balanced_accuracy - f32.balanced_accuracy) <= 0.01,
            "int8 faster than float32": i8.latency_ms < f32.latency_ms,
        }
        for name, passed in checks.items():
            print(f"{'PASS' if passed else 'MISS'}  {name}")
        ok = ok and all(checks.values())
        summary[run.name] = {"int8 MB": i8.size_mb, "int8 latency ms": i8.latency_ms,
                             "int8 balanced accuracy": i8.balanced_accuracy}
    if len(summary) > 1:
        frame = pd.DataFrame(summary).T
        first = frame.iloc[0]
        for col in ("int8 latency ms", "int8 balanced accuracy"):
            frame[f"{col} / first"] = frame[col] / first[col]
        print(f"\nint8 candidates, ratios to {frame.index[0]} (one process, one after the other):")
        with pd.option_context("display.width", 200, "display.precision", 3):
            print(frame.to_string())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
