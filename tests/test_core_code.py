"""The core code the chapters show is the code the book runs.

A chapter cell that starts with ``# @core`` holds the code a learner came to learn (the model
from ``keras.applications``, ``compile``, both ``fit`` calls, the lesion bootstrap, the ECE,
Grad-CAM, the TFLite converter): imports and function definitions only. The book's own runs use
the helpers' copies. These tests take the cells from ``chapters/*.py``, execute them after the
chapter's imports, and check on small real batches that each gives exactly what its helper gives:
the same model, trainable weights, compile configuration, trained weights, intervals, maps and
TFLite bytes. (Fine-tuning the top blocks of a large backbone on cached maps,
``fitting.finetune_cached``, shares the chapter's ``unfreeze`` and compile but is not covered.)
"""

from __future__ import annotations

import ast
import os
import re

import jupytext
import numpy as np
import pytest

from helpers import (backbones, datasets, distill, ensemble, explain, export, fitting, images,
                     imbalance, metadata, metrics, notebooks, scoring, splits)

CORE = re.compile(r"^# @core\b")
SIZE = (48, 64)
CLASSES = list(datasets.HAM_CLASSES)
COVERED: dict[str, set[str]] = {
    "03": {"build_model", "fit_head", "unfreeze", "lr_schedule", "compile_finetune", "fine_tune"},
    "04": {"bootstrap", "expected_calibration_error"},
    "05": {"shades_of_gray"},
    "06": {"gradcam"},
    "07": {"to_tflite"},
    "09": {"fused_head", "logit_adjusted", "balanced_softmax_loss", "greedy_members",
           "distillation_loss"},
}
"""Every function a core cell defines, per chapter: each is compared with its helper below."""


def _source(chapter: str):
    return next(s for s in notebooks.sources() if s.name.startswith(chapter))


def core_cells(chapter: str) -> list[str]:
    notebook = jupytext.read(_source(chapter))
    return [c.source for c in notebook.cells if c.cell_type == "code" and CORE.match(c.source)]


def chapter_core(chapter: str) -> dict:
    """The chapter's imports, then its core cells, executed in one namespace."""
    notebook = jupytext.read(_source(chapter))
    imports = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            imports += [ast.unparse(n) for n in tree.body
                        if isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace: dict = {}
    exec("\n".join(imports), namespace)  # noqa: S102 - the chapter's own code
    for source in core_cells(chapter):
        exec(source, namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("chapter", sorted(COVERED))
def test_core_cells_hold_definitions_only_and_each_is_tested(chapter):
    defined = set()
    for source in core_cells(chapter):
        for node in ast.parse(source).body:
            assert isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)), (
                f"chapter {chapter}: a # @core cell runs code ({ast.unparse(node)[:60]}); keep "
                f"only imports and definitions there, and run them in the next cell")
            if isinstance(node, ast.FunctionDef):
                defined.add(node.name)
    assert defined == COVERED[chapter], "a core function without a test here, or a test without one"


def test_only_the_listed_chapters_have_core_cells():
    with_core = {s.name[:2] for s in notebooks.sources() if core_cells(s.name[:2])}
    assert with_core == set(COVERED)


# --- chapter 03: the model, compile and both fit calls -------------------------------------------

@pytest.fixture(scope="module")
def ch03():
    return chapter_core("03")


@pytest.fixture(scope="module")
def weights():
    if not os.environ.get("SKINBOOK_WEIGHTS"):
        pytest.skip("SKINBOOK_WEIGHTS is not set (the offline ImageNet weights folder)")
    os.environ["SKINBOOK_OFFLINE"] = "1"
    info = backbones.resolve_weights("mobilenet_025")
    if not info.pretrained:
        pytest.skip("no MobileNet 0.25 ImageNet weights here")
    return info


@pytest.fixture(scope="module")
def small_table(ham_table):
    table = datasets.subsample(ham_table, 50, seed=1, min_per_class=5)
    return table.assign(split=splits.grouped_split(table, seed=1))


def _pair(ch03, info, name="mobilenet_025", seed=7):
    """The chapter's model and the helper's, each built right after the same seeding."""
    import keras

    keras.utils.set_random_seed(seed)
    mine = ch03["build_model"](name, SIZE, len(CLASSES), info.keras_arg, seed=seed)
    keras.utils.set_random_seed(seed)
    theirs, _ = backbones.build_model(name, SIZE, len(CLASSES), weights=info, seed=seed)
    return mine, theirs


def _weights_equal(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))


def test_build_model_and_freezing_give_the_book_model(ch03, weights, small_table):
    mine, theirs = _pair(ch03, weights)
    assert [type(layer).__name__ for layer in mine.layers] == \
        [type(layer).__name__ for layer in theirs.layers]
    assert [layer.name for layer in mine.layers] == [layer.name for layer in theirs.layers]
    assert _weights_equal(mine, theirs)
    x = images.load_batch(small_table["path"][:6], SIZE)
    np.testing.assert_array_equal(mine.predict(x, verbose=0), theirs.predict(x, verbose=0))
    mine.get_layer("backbone_mobilenet_025").trainable = False      # the chapter's freeze
    backbones.set_trainable(theirs, "mobilenet_025", "frozen")
    assert [w.path for w in mine.trainable_weights] == [w.path for w in theirs.trainable_weights] \
        == ["head/kernel", "head/bias"]


@pytest.mark.parametrize("name", ["mobilenet_025", "efficientnet_b0"])
@pytest.mark.parametrize("momentum", [0.9, None])
def test_unfreeze_is_set_trainable_auto(ch03, name, momentum):
    import keras

    info = backbones.WeightsInfo("none")
    mine, theirs = _pair(ch03, info, name)
    for model in (mine, theirs):      # a pretrained model starts with batch norm frozen
        backbones.freeze_batchnorm(backbones.backbone_of(model))
        backbones.set_trainable(model, name, "frozen")
    ch03["unfreeze"](mine, name, bn_momentum=momentum)
    backbones.set_trainable(theirs, name, "auto", pretrained=True, bn_momentum=momentum)
    assert [w.path for w in mine.trainable_weights] == [w.path for w in theirs.trainable_weights]

    def norms(model):
        return [(layer.trainable, layer.momentum) for layer in
                backbones.backbone_of(model).layers
                if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms(mine) == norms(theirs)


def test_compile_finetune_is_the_book_compile(ch03):
    import keras

    def tiny():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])

    recipe = fitting.Recipe(finetune_lr=5e-4, label_smoothing=0.2)
    mine, theirs = tiny(), tiny()
    ch03["compile_finetune"](mine, recipe, steps_per_epoch=7, epochs=3)
    fitting.compile_finetune(theirs, recipe, steps_per_epoch=7, epochs=3)
    a, b = mine.optimizer.get_config(), theirs.optimizer.get_config()
    assert {k: v for k, v in a.items() if k != "name"} == {k: v for k, v in b.items() if k != "name"}
    assert mine.loss.get_config() == theirs.loss.get_config()
    for step in (0, 3, 7, 12, 20):
        assert float(mine.optimizer._learning_rate(step)) == \
            float(theirs.optimizer._learning_rate(step))


def test_fit_head_and_fine_tune_train_the_same_weights(ch03, weights, small_table):
    import keras

    mine, theirs = _pair(ch03, weights)
    for model in (mine, theirs):
        backbones.set_trainable(model, "mobilenet_025", "frozen")
    extractor = keras.Model(mine.input, mine.get_layer("features").output)
    parts = {p: small_table[small_table["split"] == p] for p in splits.PARTS}
    features = {p: extractor.predict(images.load_batch(parts[p]["path"], SIZE), verbose=0)
                for p in parts}
    labels = {p: scoring.label_indices(parts[p], CLASSES) for p in parts}
    cw = images.class_weights(parts["train"]["label"].astype(str), CLASSES)
    best = ch03["fit_head"](mine, features, labels, epochs=3, class_weight=cw, seed=3)
    fitting.train_head(theirs, features, labels, len(CLASSES), epochs=3, class_weight=cw, seed=3)
    assert _weights_equal(mine, theirs) and len(best.log) >= 1

    recipe = fitting.Recipe()
    ch03["fine_tune"](mine, "mobilenet_025", small_table, CLASSES, SIZE, recipe=recipe, epochs=1,
                      batch_size=16, class_weight=cw, seed=5)
    fitting.finetune_images(theirs, "mobilenet_025", small_table, CLASSES, SIZE, epochs=1,
                            recipe=recipe, batch_size=16, class_weight=cw, seed=5)
    assert _weights_equal(mine, theirs)


# --- chapter 04: the lesion bootstrap and the ECE ----------------------------------------------

@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 150)
    proba = rng.dirichlet(np.ones(4), 150)
    proba[np.arange(150), y] += rng.random(150)          # better than chance, not calibrated
    return y, proba / proba.sum(1, keepdims=True), rng.integers(0, 60, 150).astype(str)


@pytest.mark.parametrize("metric", [metrics.balanced_accuracy, metrics.macro_auc])
def test_bootstrap_is_the_book_bootstrap(predictions, metric):
    bootstrap = chapter_core("04")["bootstrap"]
    y, proba, lesions = predictions
    assert bootstrap(metric, y, proba, groups=lesions, rounds=300, seed=3) == \
        metrics.bootstrap(metric, y, proba, groups=lesions, rounds=300, seed=3)
    ids = [f"image{i}" for i in range(len(y))]          # one group per image = no groups
    assert bootstrap(metric, y, proba, groups=ids, rounds=200, seed=1) == \
        metrics.bootstrap(metric, y, proba, rounds=200, seed=1)


def test_expected_calibration_error_is_the_book_ece(predictions):
    ece = chapter_core("04")["expected_calibration_error"]
    y, proba, _ = predictions
    for bins in (1, 5, 10, 20):
        assert ece(y, proba, bins) == pytest.approx(
            metrics.expected_calibration_error(y, proba, bins), abs=1e-12)


# --- chapter 05: Shades of Gray ------------------------------------------------------------------

def test_shades_of_gray_is_the_book_colour_constancy(small_table):
    """On real images (and one tinted blue): the chapter's code and helpers.colour agree, a grey
    light is left alone, and a colour cast is divided out."""
    from helpers import colour

    shades_of_gray = chapter_core("05")["shades_of_gray"]
    batch = images.load_batch(small_table["path"][:6], SIZE)
    tinted = np.clip(batch * np.array([0.7, 0.85, 1.2], dtype=np.float32), 0, 255)
    for x in (batch, tinted):
        for p in (1.0, 6.0):
            np.testing.assert_allclose(shades_of_gray(x, p), colour.shades_of_gray(x, p),
                                       atol=1e-3)
    grey = np.full((1, 8, 8, 3), 120.0, dtype=np.float32)
    np.testing.assert_allclose(colour.shades_of_gray(grey), grey, atol=1e-3)
    cast = colour.shades_of_gray(tinted).mean(axis=(1, 2))            # per image and channel
    spread = lambda m: (m.max(axis=1) - m.min(axis=1)).mean()       # noqa: E731
    assert spread(cast) < spread(tinted.mean(axis=(1, 2)))
    with pytest.raises(ValueError, match=r"shape \(N, H, W, 3\), got \(8, 8, 3\)"):
        colour.shades_of_gray(grey[0])                               # one image, not a batch
    with pytest.raises(ValueError, match="p must be at least 1, got 0.5"):
        colour.shades_of_gray(batch, 0.5)
    with pytest.raises(ValueError, match="no images"):
        colour.pooled_features(None, small_table.iloc[:0], SIZE, colour_constancy=True)


# --- chapter 06: Grad-CAM ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(weights):
    import keras

    keras.utils.set_random_seed(1)
    model, _ = backbones.build_model("mobilenet_025", SIZE, len(CLASSES), weights=weights)
    return model


def test_gradcam_is_the_book_gradcam(tiny_model, small_table):
    gradcam = chapter_core("06")["gradcam"]
    x = images.load_batch(small_table["path"][:5], SIZE)
    classes = np.array([0, 2, 4, 5, 6])
    last = explain.find_conv_layer(tiny_model)
    middle = (*last[:-1], "conv_pw_6_relu")
    for layer in (last, middle):
        np.testing.assert_allclose(gradcam(tiny_model, x, classes, layer),
                                   explain.gradcam(tiny_model, x, classes, conv_layer=layer),
                                   atol=1e-6)


# --- chapter 07: the TFLite converters -----------------------------------------------------------

def test_to_tflite_writes_the_book_bytes(tiny_model, small_table):
    from helpers.quiet import quiet_fds

    to_tflite = chapter_core("07")["to_tflite"]
    calibration = images.load_batch(small_table["path"][:6], SIZE)
    for variant in export.VARIANTS:
        with quiet_fds():
            mine = to_tflite(tiny_model, variant, calibration)
        assert mine == export.convert(tiny_model, variant, calibration), variant


# --- chapter 09: the metadata head, logit adjustment, balanced softmax, greedy ensembles ------------

@pytest.fixture(scope="module")
def ch08():
    return chapter_core("09")


def test_fused_head_is_the_book_head_on_real_metadata(ch08, ham_sample):
    import keras

    meta = metadata.encode(ham_sample)
    feats = np.random.default_rng(0).normal(size=(len(ham_sample), 16)).astype("float32")
    keras.utils.set_random_seed(3)
    mine = ch08["fused_head"](16, len(CLASSES), meta_dim=meta.shape[1], seed=3)
    keras.utils.set_random_seed(3)
    theirs = metadata.fused_head(16, len(CLASSES), seed=3)
    assert [layer.name for layer in mine.layers] == [layer.name for layer in theirs.layers]
    assert _weights_equal(mine, theirs)
    np.testing.assert_array_equal(mine.predict([feats, meta], verbose=0),
                                  theirs.predict([feats, meta], verbose=0))


def test_logit_adjustment_and_balanced_softmax_are_the_books(ch08, predictions):
    from keras import ops

    y, proba, _ = predictions
    prior = imbalance.class_prior(y, proba.shape[1])
    for tau in (-0.5, 0.0, 1.0, 1.75):
        np.testing.assert_allclose(ch08["logit_adjusted"](proba, prior, tau),
                                   imbalance.logit_adjusted(proba, prior, tau), atol=1e-12)
    mine = ch08["balanced_softmax_loss"](prior)(y, proba.astype("float32"))
    theirs = imbalance.balanced_softmax_loss(prior)(y, proba.astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs))


def test_greedy_members_are_the_books(ch08, predictions):
    y, proba, _ = predictions
    rng = np.random.default_rng(5)
    runs = {f"run{i}": (proba + rng.random(proba.shape) * s) / (1 + s)
            for i, s in enumerate((0.2, 0.5, 0.8, 1.2))}
    for k in (1, 2, 4):
        assert ch08["greedy_members"](y, runs, max_members=k) == \
            ensemble.greedy_members(y, runs, max_members=k)


def test_distillation_loss_is_the_books(ch08, predictions):
    from keras import ops

    y, proba, _ = predictions
    rng = np.random.default_rng(9)
    teacher = rng.dirichlet(np.ones(proba.shape[1]), len(y))
    y_true = np.concatenate([np.eye(proba.shape[1])[y], teacher], axis=1).astype("float32")
    weights = rng.random(proba.shape[1]) + 0.5
    for kwargs in ({}, {"temperature": 4.0, "alpha": 0.2, "class_weight": weights}):
        mine = ch08["distillation_loss"](proba.shape[1], **kwargs)(y_true, proba.astype("f4"))
        theirs = distill.distillation_loss(proba.shape[1], **kwargs)(y_true, proba.astype("f4"))
        np.testing.assert_allclose(ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs))
