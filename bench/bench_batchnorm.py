"""Batch norm while fine-tuning: frozen (ImageNet statistics) vs training at momentum 0.9.

    python bench/bench_batchnorm.py                       # the four settings of chapter 03
    python bench/bench_batchnorm.py frozen:1e-3 0.9:1e-3  # bn mode (frozen or a momentum):lr

Whole-network fine-tuning of MobileNet 0.25 (ImageNet weights) at 150x200 on a fixed sample of
2,400 training images of the laptop split, plain Adam at a constant learning rate, class
weights, augmentation; 4 epochs each; validation balanced accuracy on 600 validation images
after every epoch, and how many validation images each class receives. Needs the laptop split
(chapter 02 with profile laptop) and the offline weights. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def parse_setting(text: str) -> tuple[str, float]:
    """``frozen:1e-3`` or ``0.9:1e-3`` (batch-norm momentum) -> (mode, learning rate)."""
    mode, _, lr = text.partition(":")
    try:
        rate = float(lr)
        if mode != "frozen":
            float(mode)
    except ValueError:
        raise SystemExit(f"bad setting {text!r}: write BN:LR, BN being 'frozen' or a momentum "
                         f"such as 0.9, LR a learning rate such as 1e-3") from None
    return mode, rate


def main(argv: list[str]) -> int:
    import keras
    from sklearn.metrics import balanced_accuracy_score

    import helpers
    from helpers import backbones, images, scoring, training

    settings = [parse_setting(a) for a in argv] or \
        [("frozen", 1e-3), ("frozen", 1e-4), ("0.9", 1e-3), ("0.9", 1e-4)]
    ctx = helpers.setup("bench", "laptop")
    table = ctx.samples("ham10000", split="load")
    classes = list(training.TASKS["ham10000"][1])
    size = tuple(ctx.profile.image_size)
    train = table[table["split"] == "train"].sample(2400, random_state=0)
    val = table[table["split"] == "val"].sample(600, random_state=0)
    weights = images.class_weights(table.loc[table["split"] == "train", "label"].astype(str),
                                   classes)
    ds = images.make_dataset(train, classes, size, batch_size=32, training=True, augment=True)
    val_x = images.make_dataset(val, classes, size, batch_size=64).map(lambda x, y: x)
    val_y = scoring.label_indices(val, classes)
    for bn, lr in settings:
        keras.utils.set_random_seed(0)
        model, _ = backbones.build_model("mobilenet_025", size, len(classes), weights="imagenet")
        backbones.set_trainable(model, "mobilenet_025", "all",
                                bn_momentum=None if bn == "frozen" else float(bn))
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss="sparse_categorical_crossentropy")
        for epoch in range(1, 5):
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0, class_weight=weights)
            predicted = model.predict(val_x, verbose=0).argmax(1)
            print(f"batch norm {bn:>6}, lr {lr:g}, epoch {epoch}: val balanced accuracy "
                  f"{balanced_accuracy_score(val_y, predicted):.3f}, predicted classes "
                  f"{np.bincount(predicted, minlength=len(classes)).tolist()} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
