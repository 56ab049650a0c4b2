"""Explaining a saved model's predictions, and checking whether an explanation is right.

Three methods, one call (:func:`explain`) for a batch of images:

``gradient_shap``
    SHAP's ``GradientExplainer`` (expected gradients): the gradient of the explained class's
    probability, averaged along random straight paths from background images (a few training
    images) to the image. One value per pixel and colour channel, in units of probability.
``partition_shap``
    The model-agnostic ``shap.Explainer`` with an image masker (``blur`` or ``inpaint``): regions
    of the image are hidden by blurring them, and Owen values (a hierarchical form of Shapley
    values) say how much each region moves the probability. Needs only predictions, no gradients.
``gradcam``
    Grad-CAM (Selvaraju et al. 2017) on the backbone's last convolutional feature map: the
    feature channels weighted by the average gradient of the class's log-probability, ReLU,
    scaled to [0, 1] and resized to the image. Coarse (one value per feature-map cell) but cheap.

SHAP's ``DeepExplainer`` is not offered: on MobileNet models (ReLU6 activations) it fails with
``LookupError: gradient registry has no entry for: shap_Relu6`` (SHAP 0.51, Keras 3).

Two checks that an explanation is *right*, not just pretty:

* :func:`positive_share_in_mask` -- the share of positive attribution that falls on the lesion
  (HAM10000 ships a segmentation mask per image), compared with the mask's share of the image,
  which is what a map that ignores the lesion would get by chance.
* :func:`randomize_top_layers` + :func:`rank_correlation` -- the model-randomisation sanity check of
  Adebayo et al. (2018): scramble the weights of the top layers and explain again. A method whose
  maps barely change is explaining the image (edges, colour), not the model.

Models in this book take RGB float32 images in 0-255 with the backbone's preprocessing inside the
graph and output softmax probabilities; nothing here needs to know which backbone it is.
Educational tool only: an explanation of a prediction is not a diagnosis.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

METHODS: tuple[str, ...] = ("gradient_shap", "partition_shap", "gradcam")
"""The explanation methods :func:`explain` knows, in the order figures and tables show them."""
METHOD_LABELS: dict[str, str] = {
    "gradient_shap": "SHAP (GradientExplainer)",
    "partition_shap": "SHAP (Partition, blur masker)",
    "gradcam": "Grad-CAM",
}
PARTITION_EVALS_PER_SAMPLE = 10
"""Model evaluations the Partition explainer may spend per image, per unit of ``nsamples``.

The profile key ``shap_nsamples`` sets both budgets: GradientExplainer draws ``nsamples`` path
samples per image; the Partition explainer gets ``10 * nsamples`` masked evaluations (smoke 80,
laptop 500 -- SHAP's own default -- full 2000)."""


# --- the feature map Grad-CAM uses ---------------------------------------------------------------

def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def find_conv_layer(model) -> tuple[str, ...]:
    """The path of layer names to the last spatial feature map of ``model`` (for Grad-CAM).

    How the layer is chosen: walk the layers in graph order, descending into nested models (a
    backbone built by ``keras.applications`` sits inside the book's models as one sub-model), and
    keep the *last* layer whose output is a 4-D ``(batch, rows, cols, channels)`` tensor with more
    than one channel. In a CNN classifier that is the output of the last convolutional block, just
    before global pooling: ``conv_pw_13_relu`` in MobileNet, ``out_relu`` in MobileNetV2,
    ``relu`` in DenseNet121. Pass ``conv_layer=`` to :func:`gradcam` to choose another one.
    Returns e.g. ``("mobilenet_0.25_224", "conv_pw_13_relu")``: sub-model, then layer.
    """
    found: tuple[str, ...] | None = None
    for layer in model.layers:
        if _is_model(layer):
            try:
                inner = find_conv_layer(layer)
            except ValueError:
                inner = None
            if inner is not None:
                found = (layer.name, *inner)
                continue
        if _output_rank(layer) == 4 and layer.output.shape[-1] not in (None, 1, 3):
            found = (layer.name,)
    if found is None:
        raise ValueError(f"model {model.name!r} has no 4-D convolutional feature map for Grad-CAM")
    return found


def _resolve_layer(model, conv_layer: str | Sequence[str] | None) -> tuple[str, ...]:
    if conv_layer is None:
        return find_conv_layer(model)
    if isinstance(conv_layer, str):
        path = _find_layer_path(model, conv_layer)
        if path is None:
            raise ValueError(f"no layer named {conv_layer!r} in model {model.name!r} "
                             f"(or its sub-models)")
        return path
    return tuple(conv_layer)


def _find_layer_path(model, name: str) -> tuple[str, ...] | None:
    for layer in model.layers:
        if layer.name == name:
            return (name,)
        if _is_model(layer):
            inner = _find_layer_path(layer, name)
            if inner is not None:
                return (layer.name, *inner)
    return None


def feature_model(model, conv_layer: str | Sequence[str] | None = None):
    """A model with the same weights returning ``[feature_map, probabilities]``.

    When the feature map lives inside a nested backbone, its tensor is not reachable from the
    outer model's graph, so the outer graph is rebuilt around the same layer objects (shared
    weights, nothing copied) with ``keras.models.clone_model(..., clone_function=lambda l: l,
    call_function=...)``: the call to the nested backbone is replaced by a call to a two-output
    version of it, recursively.
    """
    import keras

    path = _resolve_layer(model, conv_layer)
    head, rest = path[0], path[1:]
    if not rest:
        target = model.get_layer(head)
        return keras.Model(model.inputs[0], [target.output, model.outputs[0]])
    sub = model.get_layer(head)
    sub_features = feature_model(sub, rest)
    captured = []

    def call_function(layer, *args, **kwargs):
        if layer is sub:
            kwargs.pop("training", None)
            features, out = sub_features(*args, **kwargs)
            captured.append(features)
            return out
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):  # clone_model's call_function needs a Functional
        inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers:
            x = call_function(layer, x)
        outputs = x
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                               call_function=call_function)
        inputs, outputs = rebuilt.inputs[0], rebuilt.outputs[0]
    if len(captured) != 1:
        raise ValueError(f"could not expose {'/'.join(path)}: sub-model {head!r} is called "
                         f"{len(captured)} times in {model.name!r}")
    return keras.Model(inputs, [captured[0], outputs])


def gradcam(model, images: np.ndarray, class_index: Sequence[int], *,
            conv_layer: str | Sequence[str] | None = None, batch_size: int = 16,
            features=None) -> np.ndarray:
    """Grad-CAM heat maps ``(N, H, W)`` in [0, 1], one per image, for the given classes.

    Map = ReLU(sum_k alpha_k A_k) with A_k the feature channels of ``conv_layer`` (default: see
    :func:`find_conv_layer`) and alpha_k the spatial mean of d log p_class / d A_k. The log of
    the softmax probability is used because the models output probabilities, not logits, and a
    confident probability's gradient vanishes. Each map is divided by its maximum (a map that is
    zero everywhere stays zero) and resized bilinearly to the image size.
    """
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    class_index = np.asarray(class_index, dtype=np.int64)
    features = features or feature_model(model, conv_layer)
    height, width = images.shape[1:3]
    out = np.zeros(images.shape[:3], dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        idx = class_index[start:start + batch_size]
        with tf.GradientTape() as tape:
            fmap, probs = features(batch, training=False)
            picked = tf.gather(probs, idx, axis=1, batch_dims=1)
            score = tf.math.log(picked + 1e-12)
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))
        cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)
        cam = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
        out[start:start + len(batch)] = np.clip(cam.numpy(), 0.0, 1.0)
    return out


# --- SHAP -------------------------------------------------------------------------------------

def _class_selector_model(model):
    """``model`` with one output, the probability of the class held in a variable.

    Changing the variable (``selector.class_id.assign(c)``) switches the explained class without
    a new graph: SHAP builds one gradient function per explainer and output, and tracing a
    DenseNet's gradient takes seconds each time.
    """
    import keras

    class PickClass(keras.layers.Layer):
        def build(self, input_shape):
            self.class_id = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                            trainable=False, name="class_id")

        def call(self, probs):
            return keras.ops.expand_dims(keras.ops.take(probs, self.class_id, axis=1), -1)

    picker = PickClass(name="pick_class")
    return keras.Model(model.inputs[0], picker(model.outputs[0])), picker


def gradient_shap(model, images: np.ndarray, class_index: Sequence[int], background: np.ndarray,
                  *, nsamples: int = 50, seed: int = 42, batch_size: int = 50) -> np.ndarray:
    """SHAP GradientExplainer values ``(N, H, W, 3)`` for the given class of each image.

    Expected gradients: for each of ``nsamples`` draws, a background image x' and a point
    x' + t (x - x') on the straight path are picked at random and the gradient there is multiplied
    by (x - x'). Summed over pixels the values approximate p(x) - E[p(background)] (exactly so
    only in expectation: few samples give noisy maps).
    """
    import shap
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    images = np.asarray(images, dtype=np.float32)
    class_index = np.asarray(class_index, dtype=np.int64)
    out = np.zeros(images.shape, dtype=np.float32)
    single, picker = _class_selector_model(model)
    explainer = shap.GradientExplainer(single, np.asarray(background, dtype=np.float32),
                                       batch_size=batch_size)
    for class_id in np.unique(class_index):
        rows = np.flatnonzero(class_index == class_id)
        picker.class_id.assign(int(class_id))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = explainer.shap_values(images[rows], nsamples=nsamples,
                                           rseed=seed + int(class_id))
        out[rows] = np.asarray(values, dtype=np.float32).reshape(images[rows].shape)
    return out


def blur_masker(image_size: tuple[int, int]) -> str:
    """The blur masker string scaled to the image: a kernel of about 1/6 of the shorter side.

    SHAP's examples use ``blur(128,128)`` at 224x224; a kernel that large on a 75x100 image would
    replace the lesion by the mean skin colour, which is what "hidden" should mean here too.
    """
    k = max(5, min(image_size) // 6)
    return f"blur({k},{k})"


def partition_shap(model, images: np.ndarray, class_index: Sequence[int], *,
                   max_evals: int = 500, masker: str | None = None,
                   batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Model-agnostic SHAP values ``(N, H, W, 3)`` with an image masker; also the base values.

    ``masker`` is a ``shap.maskers.Image`` mask value: ``"blur(k,k)"`` (default, see
    :func:`blur_masker`), ``"inpaint_telea"`` or ``"inpaint_ns"`` (both need OpenCV). The
    Partition explainer splits the image into a hierarchy of rectangles and, with ``max_evals``
    model calls per image, gives each region an Owen value; values sum exactly to
    p(image) - p(fully masked image) (the returned base value).
    """
    import shap
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    class_index = np.asarray(class_index, dtype=np.int64)
    masker_obj = shap.maskers.Image(masker or blur_masker(images.shape[1:3]), images.shape[1:])
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                          autograph=False)
    values = np.zeros(images.shape, dtype=np.float32)
    base = np.zeros(len(images), dtype=np.float32)
    for i, (image, class_id) in enumerate(zip(images, class_index)):
        def f(x, class_id=int(class_id)):
            return predict(tf.convert_to_tensor(np.asarray(x, np.float32))).numpy()[:, [class_id]]

        explainer = shap.Explainer(f, masker_obj, algorithm="partition")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = explainer(image[None], max_evals=max_evals, batch_size=batch_size,
                               silent=True)
        values[i] = result.values[0, ..., 0]
        base[i] = np.ravel(result.base_values)[0]
    return values, base


# --- one call for a batch ------------------------------------------------------------------------

@dataclass
class Explanation:
    """What :func:`explain` returns: arrays ready to plot, one row per image.

    ``values[method]`` is ``(N, H, W, 3)`` for the SHAP methods; ``maps[method]`` is ``(N, H, W)``
    for every method: SHAP summed over colour channels (signed, in units of probability), Grad-CAM
    in [0, 1].
    """

    images: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    classes: tuple[str, ...]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    base_values: dict[str, np.ndarray] = field(default_factory=dict)
    conv_layer: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return [m for m in METHODS if m in self.maps]

    @property
    def explained_class(self) -> list[str]:
        return [self.classes[i] for i in self.class_index]


def explain(model, images: np.ndarray, *, background: np.ndarray, nsamples: int = 50,
            class_index: Sequence[int] | None = None, classes: Sequence[str] | None = None,
            methods: Sequence[str] = METHODS, masker: str | None = None,
            conv_layer: str | Sequence[str] | None = None, seed: int = 42) -> Explanation:
    """Explain ``images`` (N, H, W, 3; RGB 0-255) with every method in ``methods``.

    ``class_index`` says which class to explain per image (default: the predicted class).
    ``background`` is a few training images (GradientExplainer's reference distribution);
    ``nsamples`` is the profile's ``shap_nsamples`` (see :data:`PARTITION_EVALS_PER_SAMPLE`).
    """
    import time

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    probs = np.asarray(model.predict(images, verbose=0, batch_size=32))
    class_index = (probs.argmax(axis=1) if class_index is None
                   else np.asarray(class_index, dtype=np.int64))
    if classes is None:
        classes = [str(i) for i in range(probs.shape[1])]
    classes = tuple(classes)
    result = Explanation(images=images, class_index=class_index, probabilities=probs,
                         classes=classes)
    for method in [m for m in METHODS if m in methods]:
        tick = time.perf_counter()
        if method == "gradient_shap":
            values = gradient_shap(model, images, class_index, background, nsamples=nsamples,
                                   seed=seed)
            result.values[method], result.maps[method] = values, values.sum(axis=-1)
        elif method == "partition_shap":
            values, base = partition_shap(model, images, class_index, masker=masker,
                                          max_evals=PARTITION_EVALS_PER_SAMPLE * nsamples)
            result.values[method], result.maps[method] = values, values.sum(axis=-1)
            result.base_values[method] = base
        else:
            result.conv_layer = _resolve_layer(model, conv_layer)
            result.maps[method] = gradcam(model, images, class_index, conv_layer=result.conv_layer)
        result.seconds[method] = time.perf_counter() - tick
    return result


# --- is the explanation on the lesion? -------------------------------------------------------

def mask_path(image_id: str, data_root: str | Path | None = None) -> Path:
    """Where HAM10000's lesion mask for ``image_id`` lives (``masks/<id>_segmentation.png``)."""
    from helpers import config

    return config.data_root(data_root) / "ham10000" / "masks" / f"{image_id}_segmentation.png"


def load_masks(image_ids: Sequence[str], image_size: tuple[int, int],
               data_root: str | Path | None = None) -> np.ndarray:
    """Lesion masks ``(N, H, W)`` (bool) resized to the model input (nearest neighbour).

    A missing mask raises ``FileNotFoundError`` naming the file: only HAM10000 has masks.
    """
    from PIL import Image

    height, width = image_size
    out = np.zeros((len(image_ids), height, width), dtype=bool)
    for i, image_id in enumerate(image_ids):
        path = mask_path(image_id, data_root)
        if not path.exists():
            raise FileNotFoundError(f"no lesion mask for {image_id} at {path} (only HAM10000 "
                                    f"images have masks)")
        mask = Image.open(path).convert("L").resize((width, height), Image.NEAREST)
        out[i] = np.asarray(mask) > 127
    return out


def positive_share_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the share of positive attribution that lies inside the mask (NaN if none).

    ``maps`` (N, H, W) is any attribution map (negative values are ignored: they argue *against*
    the class); ``masks`` (N, H, W) is boolean. A map spread evenly over the image scores the
    mask's area share (see :func:`chance_share`), one entirely on the lesion scores 1.
    """
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    positive = np.clip(maps, 0.0, None)
    total = positive.sum(axis=(1, 2))
    inside = (positive * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def chance_share(masks: np.ndarray) -> np.ndarray:
    """The mask's share of each image: what :func:`positive_share_in_mask` gives by chance."""
    return np.asarray(masks, dtype=bool).mean(axis=(1, 2))


def on_lesion_table(explanation: Explanation, masks: np.ndarray,
                    image_ids: Sequence[str] | None = None,
                    labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per image and method: positive share on the lesion, chance level, and lift.

    ``lift`` = share / chance (1 = no better than ignoring the lesion). ``hottest_on_lesion``
    says whether the single most positive pixel is on the lesion (the "pointing game").
    """
    rows = []
    chance = chance_share(masks)
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(len(masks))]
    for method in explanation.methods:
        maps = explanation.maps[method]
        share = positive_share_in_mask(maps, masks)
        flat = maps.reshape(len(maps), -1)
        hottest = masks.reshape(len(masks), -1)[np.arange(len(maps)), flat.argmax(axis=1)]
        for i in range(len(maps)):
            row = {"image_id": ids[i], "method": METHOD_LABELS[method],
                   "explained": explanation.explained_class[i],
                   "on_lesion": share[i], "chance": chance[i],
                   "lift": share[i] / chance[i] if chance[i] > 0 else np.nan,
                   "hottest_on_lesion": bool(hottest[i]) if flat[i].max() > 0 else False}
            if labels is not None:
                row["label"] = labels[i]
            rows.append(row)
    return pd.DataFrame(rows)


def summarize_on_lesion(table: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per method (and any other ``by`` columns): mean share on the lesion vs the chance level.

    ``share_above_chance`` is the fraction of images whose map beats its own mask's area share;
    ``pointing_game`` the fraction whose hottest pixel is on the lesion.
    """
    table = table.assign(above_chance=table["on_lesion"] > table["chance"])
    out = (table.groupby(list(by), sort=False)
           .agg(images=("on_lesion", "size"), on_lesion=("on_lesion", "mean"),
                chance=("chance", "mean"), median_lift=("lift", "median"),
                share_above_chance=("above_chance", "mean"),
                pointing_game=("hottest_on_lesion", "mean")))
    return out


# --- sanity check: does the explanation depend on the model? ----------------------------------

def weighted_layers(model) -> list:
    """Layers that hold weights, in graph order, descending into nested models."""
    out = []
    for layer in model.layers:
        if _is_model(layer):
            out += weighted_layers(layer)
        elif layer.weights:
            out.append(layer)
    return out


def randomize_top_layers(model, n_layers: int, *, seed: int = 0):
    """A copy of ``model`` whose top ``n_layers`` weighted layers have scrambled weights.

    The original model is untouched. "Top" follows :func:`weighted_layers` from the output
    backwards (the classifier first, then the last blocks of the backbone: the cascading order of
    Adebayo et al. 2018). Each weight tensor of those layers is randomly permuted: the learned
    arrangement is destroyed while the scale of the weights is kept (so activations neither
    explode nor vanish and batch-norm variances stay positive) -- the same idea as re-initialising.
    Returns ``(copy, names of the scrambled layers)``.
    """
    import keras

    if n_layers < 1:
        raise ValueError("n_layers must be at least 1")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    layers = weighted_layers(copy)[-n_layers:]
    rng = np.random.default_rng(seed)
    for layer in layers:
        for variable in layer.weights:
            value = np.asarray(variable.numpy())
            variable.assign(rng.permutation(value.ravel()).reshape(value.shape))
    return copy, [layer.name for layer in layers]


def rank_correlation(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation per image between two stacks of maps ``(N, H, W)``.

    With ``absolute`` (default, as in Adebayo et al.) the maps' absolute values are compared, so a
    map that only flips sign still counts as unchanged. A constant map gives NaN.
    """
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = spearmanr(a[i], b[i]).statistic
    return out


SANITY_THRESHOLD = 0.5
"""Mean rank correlation at or above which a method is flagged: its maps survive randomising the
model's top layers largely unchanged. A choice, stated here: Adebayo et al. show maps that stay
near 1 (guided back-propagation) and maps that drop towards 0 (plain gradients)."""
RERUN_RATIO = 0.8
"""A method is also flagged when its maps after scrambling are at least this fraction as similar
to the originals as a plain re-run of the method is (the change is lost in its own noise)."""


def sanity_verdict(mean: float, rerun: float | None = None) -> str:
    """The verdict for one method and setting of :func:`sanity_check` (see there)."""
    if mean is None or not np.isfinite(mean):
        return "no map to compare"
    if mean >= SANITY_THRESHOLD:
        return "FLAG: barely changes"
    if rerun is not None and np.isfinite(rerun) and mean >= RERUN_RATIO * rerun:
        return "FLAG: change within re-run noise"
    return "ok: changes"


def sanity_check(model, explanation: Explanation, *, background: np.ndarray, nsamples: int,
                 levels: Sequence[int] = (1,), masker: str | None = None, seed: int = 42,
                 repeat: bool = True) -> tuple[pd.DataFrame, dict[str, Explanation]]:
    """The model-randomisation test: explain the same images with top layers scrambled.

    For each ``n`` in ``levels`` the top ``n`` weighted layers are scrambled
    (:func:`randomize_top_layers`), the same classes are explained again, and each method's maps
    are compared with the original ones (:func:`rank_correlation`). With ``repeat`` the original
    model is also explained a second time with another random seed: the correlation a method
    reaches with *itself* (its noise level) is the ceiling to read the other numbers against.
    Verdicts: ``FLAG: barely changes`` when the mean correlation is at least
    :data:`SANITY_THRESHOLD`; ``FLAG: change within re-run noise`` when it is at least
    :data:`RERUN_RATIO` times the method's re-run correlation; otherwise ``ok: changes``.
    A map that became constant (Grad-CAM is all zero when every weighted channel turns negative)
    shares no ranking with the original: it counts as correlation 0 and in ``empty_maps``. Returns a table (one row per method and setting: mean and lowest per-image
    correlation, images compared, empty maps, verdict) and the new explanations by setting (for
    :func:`plot_sanity`).
    """
    rows = []
    redone: dict[str, Explanation] = {}
    ceiling: dict[str, float] = {}
    methods = explanation.methods
    settings: list[tuple[str, int, object]] = []
    if repeat:
        settings.append(("same model, new seed", 0, model))
    for n in levels:
        scrambled, names = randomize_top_layers(model, n, seed=seed + n)
        settings.append((f"top {n} layer{'s' if n > 1 else ''} scrambled "
                         f"({names[0]}{'...' + names[-1] if n > 1 else ''})", n, scrambled))
    for name, n, candidate in settings:
        again = explain(candidate, explanation.images, background=background, nsamples=nsamples,
                        class_index=explanation.class_index, classes=explanation.classes,
                        methods=methods, masker=masker, conv_layer=explanation.conv_layer or None,
                        seed=seed + 1000 + n)
        redone[name] = again
        for method in methods:
            rho = rank_correlation(explanation.maps[method], again.maps[method])
            was_flat = np.ptp(explanation.maps[method].reshape(len(rho), -1), axis=1) == 0
            now_flat = np.ptp(again.maps[method].reshape(len(rho), -1), axis=1) == 0
            rho = np.where(now_flat & ~was_flat, 0.0, rho)   # emptied: no ranking left in common
            finite = np.isfinite(rho)
            empty = int((now_flat & ~was_flat).sum())
            mean = float(np.nanmean(rho)) if finite.any() else np.nan
            if n == 0:
                ceiling[method] = mean
                flag = ""
            else:
                flag = sanity_verdict(mean, ceiling.get(method))
            rows.append({"method": METHOD_LABELS[method], "setting": name, "layers_scrambled": n,
                         "spearman_mean": mean,
                         "spearman_min": float(np.nanmin(rho)) if finite.any() else np.nan,
                         "images": int(finite.sum()), "empty_maps": empty, "verdict": flag})
    return pd.DataFrame(rows), redone


# --- picking what to explain ------------------------------------------------------------------

def load_images(paths: Sequence[str | Path], image_size: tuple[int, int]) -> np.ndarray:
    """Images as the models saw them in training: ``(N, H, W, 3)`` float32 RGB 0-255.

    Uses the same decode-and-resize op as the training pipeline (:mod:`helpers.images`), so the
    probabilities match the run's saved predictions.
    """
    from helpers.images import decode_and_resize

    return np.stack([decode_and_resize(str(p), tuple(image_size)).numpy() for p in paths])


def pick_examples(predictions: pd.DataFrame, classes: Sequence[str], per_group: int, *,
                  split: str = "test", seed: int = 42,
                  only: Sequence[str] | None = None) -> pd.DataFrame:
    """Up to ``per_group`` images per (true class, correct / wrong) from a predictions table.

    ``predictions`` has ``image_id, split, label`` and ``p_<class>`` columns (the run-folder
    contract). Adds ``predicted``, ``confidence`` (probability of the prediction) and ``outcome``
    (correct / wrong). Rows are sampled at random with ``seed``; ``only`` restricts the classes.
    """
    table = predictions[predictions["split"] == split].copy()
    if table.empty:
        raise ValueError(f"no {split!r} rows in the predictions table")
    columns = [f"p_{c}" for c in classes]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    probs = table[columns].to_numpy()
    table["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    table["confidence"] = probs.max(axis=1)
    table["label"] = table["label"].astype(str)
    table["outcome"] = np.where(table["predicted"] == table["label"], "correct", "wrong")
    picked = []
    for label in (only or classes):
        for outcome in ("correct", "wrong"):
            group = table[(table["label"] == label) & (table["outcome"] == outcome)]
            if len(group):
                picked.append(group.sample(min(per_group, len(group)), random_state=seed))
    if not picked:
        raise ValueError("no test images to explain")
    return pd.concat(picked, ignore_index=True)


# --- figures ----------------------------------------------------------------------------------

def shap_overlay(ax, image: np.ndarray, values: np.ndarray, *, vmax: float | None = None):
    """SHAP's own image_plot look: the image in grey, red = for the class, blue = against."""
    from shap.plots.colors import red_transparent_blue

    grey = np.asarray(image, dtype=np.float32).mean(axis=-1)
    ax.imshow(grey, cmap="gray", alpha=0.35)
    vmax = vmax or float(np.nanpercentile(np.abs(values), 99.5)) or 1e-9
    handle = ax.imshow(values, cmap=red_transparent_blue, vmin=-vmax, vmax=vmax)
    ax.axis("off")
    return handle


def gradcam_overlay(ax, image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45):
    """The image with the Grad-CAM heat map (jet colours, 0 = blue, 1 = red) laid over it."""
    ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
    handle = ax.imshow(cam, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.axis("off")
    return handle


def plot_explanations(explanation: Explanation, rows: Sequence[int] | None = None, *,
                      masks: np.ndarray | None = None, titles: Sequence[str] | None = None,
                      cell: float = 2.3):
    """One row per image: the image (lesion outline), each SHAP map, and the Grad-CAM overlay."""
    import matplotlib.pyplot as plt

    rows = list(range(len(explanation.images))) if rows is None else list(rows)
    methods = explanation.methods
    fig, axes = plt.subplots(len(rows), 1 + len(methods), squeeze=False,
                             figsize=(cell * (1 + len(methods)), cell * 0.85 * len(rows) + 0.4))
    for r, i in enumerate(rows):
        image = explanation.images[i]
        ax = axes[r, 0]
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
        if masks is not None:
            ax.contour(masks[i], levels=[0.5], colors="white", linewidths=0.8)
        title = titles[i] if titles is not None else f"explains {explanation.explained_class[i]}"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        for c, method in enumerate(methods, start=1):
            if method == "gradcam":
                gradcam_overlay(axes[r, c], image, explanation.maps[method][i])
            else:
                shap_overlay(axes[r, c], image, explanation.maps[method][i])
            if masks is not None:
                axes[r, c].contour(masks[i], levels=[0.5], colors="black", linewidths=0.6)
            if r == 0:
                axes[r, c].set_title(METHOD_LABELS[method], fontsize=8)
    fig.tight_layout()
    return fig


def plot_sanity(explanation: Explanation, again: Explanation, row: int = 0, *, cell: float = 2.3):
    """Each method's map for one image: trained model (top) vs scrambled top layers (bottom)."""
    import matplotlib.pyplot as plt

    methods = explanation.methods
    fig, axes = plt.subplots(2, len(methods), squeeze=False,
                             figsize=(cell * len(methods), cell * 1.7))
    for c, method in enumerate(methods):
        for r, source in enumerate((explanation, again)):
            image = source.images[row]
            if method == "gradcam":
                gradcam_overlay(axes[r, c], image, source.maps[method][row])
            else:
                shap_overlay(axes[r, c], image, source.maps[method][row])
        axes[0, c].set_title(f"{METHOD_LABELS[method]}\ntrained", fontsize=8)
        axes[1, c].set_title("top layers scrambled", fontsize=8)
    fig.tight_layout()
    return fig
