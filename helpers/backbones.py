"""The backbone registry: which ImageNet networks the book can train, and their input contracts.

Every backbone here is a Keras application used without its ImageNet classifier
(``include_top=False``). For each one the registry knows

* its constructor and the keyword arguments it needs (e.g. MobileNet's width ``alpha``),
* the smallest input it accepts and the size it was trained at,
* the input range it expects and the preprocessing that maps plain RGB 0-255 pixels there,
* which layers count as its "top blocks" (what fine-tuning unfreezes on a large backbone),
* the file name of its ImageNet weights (without the top).

:func:`build_model` bakes the preprocessing **into the model graph**, using only built-in Keras
layers, so a saved or exported model takes plain RGB pixels 0-255 (float32) and needs nothing
from this package to load.

Weights are resolved in one place, :func:`resolve_weights`: a local file found through
``$SKINBOOK_WEIGHTS`` first, else ``"imagenet"`` (Keras downloads it; needs internet), else
random initialisation with a visible notice. Every model records what it got
(:class:`WeightsInfo`: source, file name, sha256).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import config
from helpers.download import file_digest

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING = {
    "tf": "x / 127.5 - 1  (RGB in [-1, 1])",
    "torch": "(x / 255 - ImageNet mean) / ImageNet std, per RGB channel",
    "caffe": "RGB -> BGR, then minus the ImageNet mean per channel (no scaling)",
    "none": "raw RGB 0-255 (the network rescales and normalises inside itself)",
}
"""Keras' names for the preprocessing modes, and what each does to RGB 0-255 pixels."""


@dataclass(frozen=True)
class Backbone:
    """What the book needs to know about one ImageNet backbone."""

    name: str
    display: str
    constructor: str
    """Name of the constructor in ``keras.applications``."""
    module: str
    """The ``keras.applications`` module whose ``preprocess_input`` defines the contract."""
    preprocessing: str
    """One of :data:`PREPROCESSING`: how RGB 0-255 pixels are mapped to the network's input."""
    min_size: int
    default_size: int
    weights_file: str
    """File name of the ImageNet weights without the top (the name Keras itself uses)."""
    top_blocks_from: str | None
    """First layer of the "top blocks" fine-tuning unfreezes; ``None`` = the whole network."""
    kwargs: dict = field(default_factory=dict)
    split_layer: str | None = None
    """The frozen part ends with this layer's output when only the top blocks are trained
    (``None``: the input of ``top_blocks_from``)."""

    @property
    def top_description(self) -> str:
        if self.small:
            return "whole network"
        return f"after {self.split_layer}" if self.split_layer else f"from {self.top_blocks_from}"

    @property
    def input_range(self) -> str:
        return PREPROCESSING[self.preprocessing]

    @property
    def small(self) -> bool:
        """Small backbones are fine-tuned whole; large ones only from ``top_blocks_from``."""
        return self.top_blocks_from is None

    def constructor_fn(self):
        import keras

        return getattr(keras.applications, self.constructor)

    def preprocess_reference(self, images: np.ndarray) -> np.ndarray:
        """Keras' own ``preprocess_input`` for this backbone (what the baked layers reproduce)."""
        import keras

        module = getattr(keras.applications, self.module)
        return np.asarray(module.preprocess_input(np.array(images, dtype=np.float32, copy=True)))


REGISTRY: dict[str, Backbone] = {b.name: b for b in [
    Backbone("densenet121", "DenseNet121", "DenseNet121", "densenet", "torch", 32, 224,
             "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
             top_blocks_from="conv5_block1_0_bn", split_layer="pool4_pool"),
    Backbone("inception_v3", "InceptionV3", "InceptionV3", "inception_v3", "tf", 75, 299,
             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
             top_blocks_from="mixed9 block", split_layer="mixed8"),
    Backbone("xception", "Xception", "Xception", "xception", "tf", 71, 299,
             "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
             top_blocks_from="block14_sepconv1"),
    Backbone("resnet50", "ResNet50", "ResNet50", "resnet50", "caffe", 32, 224,
             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
             top_blocks_from="conv5_block1_1_conv", split_layer="conv4_block6_out"),
    Backbone("mobilenet_v2", "MobileNetV2 (alpha 1.0)", "MobileNetV2", "mobilenet_v2", "tf", 32,
             224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
             top_blocks_from=None, kwargs={"alpha": 1.0}),
    Backbone("mobilenet_v2_035", "MobileNetV2 (alpha 0.35)", "MobileNetV2", "mobilenet_v2", "tf",
             32, 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
             top_blocks_from=None, kwargs={"alpha": 0.35}),
    # Few parameters, but its depthwise + squeeze-excite blocks train slowly on a CPU (and trace
    # slowly: minutes in the smoke book), so only its last two stages are fine-tuned.
    Backbone("efficientnet_b0", "EfficientNetB0", "EfficientNetB0", "efficientnet", "none", 32,
             224, "efficientnetb0_notop.h5", top_blocks_from="block6a_expand_conv",
             split_layer="block5c_add"),
    Backbone("mobilenet_025", "MobileNet (alpha 0.25)", "MobileNet", "mobilenet", "tf", 32, 224,
             "mobilenet_2_5_224_tf_no_top.h5", top_blocks_from=None, kwargs={"alpha": 0.25}),
    Backbone("mobilenet_075", "MobileNet (alpha 0.75)", "MobileNet", "mobilenet", "tf", 32, 224,
             "mobilenet_7_5_224_tf_no_top.h5", top_blocks_from=None, kwargs={"alpha": 0.75}),
]}
"""Backbones by the name profiles and chapters use. ``mobilenet_025`` is MobileNet v1 at width 0.25, ``mobilenet_075`` at 0.75."""


def get(name: str) -> Backbone:
    """The registry entry for ``name``; an unknown name raises ``ValueError`` listing valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown backbone {name!r}. Known backbones: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def check_input_size(backbone: Backbone, image_size: tuple[int, int]) -> None:
    """Raise ``ValueError`` if ``image_size`` (H, W) is below the backbone's minimum."""
    if min(image_size) < backbone.min_size:
        raise ValueError(f"{backbone.display} needs inputs of at least {backbone.min_size}x"
                         f"{backbone.min_size} pixels; got {image_size[0]}x{image_size[1]}.")


# --- weights --------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a model started from: ``source`` is ``file``, ``imagenet`` or ``none``."""

    source: str
    file: str | None = None
    sha256: str | None = None
    notice: str | None = None

    @property
    def keras_arg(self):
        """The value to pass as ``weights=`` to the Keras constructor."""
        if self.source == "file":
            return self._path
        return "imagenet" if self.source == "imagenet" else None

    @property
    def pretrained(self) -> bool:
        return self.source != "none"

    def to_dict(self) -> dict:
        out = {"source": self.source, "file": self.file, "sha256": self.sha256}
        if self.notice:
            out["notice"] = self.notice
        return out

    def describe(self) -> str:
        if self.source == "none":
            return "none (random initialisation)"
        return f"{self.source}: {self.file} (sha256 {str(self.sha256)[:16]}...)"

    _path: str | None = field(default=None, repr=False, compare=False)


def weights_dir() -> Path | None:
    """The folder of local weight files from ``$SKINBOOK_WEIGHTS`` (``None`` when unset)."""
    value = os.environ.get(config.WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def _online(host: str = "storage.googleapis.com", timeout: float = 2.0) -> bool:
    if os.environ.get("SKINBOOK_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(name: str, requested: str | None = "imagenet", *,
                    verbose: bool = True) -> WeightsInfo:
    """Decide which weights ``name`` starts from: the one place that does.

    ``requested=None`` asks for random initialisation. ``"imagenet"`` looks for the backbone's
    weights file in ``$SKINBOOK_WEIGHTS`` first, then lets Keras download it when the machine is
    online, and otherwise falls back to random initialisation and **prints a notice**. A path
    to an ``.h5`` file is used as given.
    """
    backbone = get(name)
    if requested is None or requested == "none":
        return WeightsInfo("none")
    if requested != "imagenet":
        path = Path(requested)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found")
        return WeightsInfo("file", path.name, file_digest(path), _path=str(path))
    folder = weights_dir()
    if folder is not None and (folder / backbone.weights_file).is_file():
        path = folder / backbone.weights_file
        return WeightsInfo("file", path.name, file_digest(path), _path=str(path))
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / backbone.weights_file
    if cached.is_file() or _online():
        return WeightsInfo("imagenet", backbone.weights_file,
                           file_digest(cached) if cached.is_file() else None)
    notice = (f"NOTICE: no ImageNet weights for {backbone.display} here ({backbone.weights_file} "
              f"is not in ${config.WEIGHTS_ENV}={folder} and there is no internet to download it). "
              f"{backbone.display} starts from RANDOM weights: its results are NOT pretrained "
              f"results.")
    if verbose:
        print(notice)
    return WeightsInfo("none", notice=notice)


# --- models ---------------------------------------------------------------------------------

def preprocessing_layers(backbone: Backbone) -> list:
    """Built-in Keras layers mapping RGB 0-255 to the backbone's expected input."""
    import keras

    mode = backbone.preprocessing
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "torch":
        return [keras.layers.Rescaling(1 / 255.0, name="preprocess_scale"),
                keras.layers.Normalization(mean=list(IMAGENET_MEAN_RGB),
                                           variance=[s * s for s in IMAGENET_STD_RGB],
                                           name="preprocess_torch")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction in one fixed (non-trainable) linear map per pixel.
        flip = np.eye(3, dtype=np.float32)[::-1].copy()
        layer = keras.layers.Dense(3, name="preprocess_caffe", trainable=False)
        layer.build((None, 3))
        layer.set_weights([flip, -np.array(CAFFE_MEAN_BGR, dtype=np.float32)])
        return [layer]
    if mode == "none":
        return []
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def preprocessor(name: str, image_size: tuple[int, int]):
    """A small Keras model with only the baked preprocessing of ``name`` (for checks and plots)."""
    import keras

    backbone = get(name)
    inputs = keras.Input((*image_size, 3), name="rgb_0_255")
    x = inputs
    for layer in preprocessing_layers(backbone):
        x = layer(x)
    return keras.Model(inputs, x, name=f"{name}_preprocess")


def build_backbone(name: str, image_size: tuple[int, int], weights: WeightsInfo):
    """The Keras application without its top, with batch-norm layers frozen.

    BatchNormalization layers get ``trainable=False``: in Keras 3 that keeps them in inference
    mode (running statistics) even while the rest of the network trains. Calling the backbone
    with ``training=False`` is *not* enough, and MobileNetV2 collapses to one class without it.
    """
    backbone = get(name)
    check_input_size(backbone, image_size)
    kwargs = dict(backbone.kwargs)  # EfficientNet (v1) always rescales inside its own graph
    net = backbone.constructor_fn()(include_top=False, weights=weights.keras_arg,
                                    input_shape=(*image_size, 3), **kwargs)
    net.name = f"backbone_{name}"
    if weights.pretrained:
        freeze_batchnorm(net)
    return net


def freeze_batchnorm(model) -> int:
    """Set ``trainable=False`` on every BatchNormalization layer; return how many."""
    import keras

    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def build_model(name: str, image_size: tuple[int, int], n_classes: int, *,
                weights: WeightsInfo | str | None = "imagenet", dropout: float = 0.3,
                seed: int = 42):
    """Preprocessing + backbone + global average pooling + dropout + softmax head.

    Input: float32 ``(None, H, W, 3)`` RGB 0-255. Output: class probabilities. The backbone is
    a nested model named ``backbone_<name>``; pooling is ``features``, the head ``head``.
    Returns ``(model, weights_info)``.
    """
    import keras

    info = weights if isinstance(weights, WeightsInfo) else resolve_weights(name, weights)
    backbone = get(name)
    net = build_backbone(name, image_size, info)
    inputs = keras.Input((*image_size, 3), name="rgb_0_255")
    x = inputs
    for layer in preprocessing_layers(backbone):
        x = layer(x)
    x = net(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    return model, info


def backbone_of(model):
    """The nested backbone model inside a model made by :func:`build_model`."""
    for layer in model.layers:
        if layer.name.startswith("backbone_"):
            return layer
    raise ValueError(f"{model.name} has no nested backbone_* model")


def split_tensor(net, name: str):
    """The tensor inside backbone ``net`` where its frozen lower part ends (top blocks begin)."""
    entry = get(name)
    if entry.split_layer:
        return net.get_layer(entry.split_layer).output
    return net.get_layer(entry.top_blocks_from).input


def set_trainable(model, name: str, mode: str, *, pretrained: bool = True,
                  bn_momentum: float | None = None) -> int:
    """Freeze or unfreeze the backbone inside ``model``; return the number of trainable weights.

    ``mode``: ``"frozen"`` (head only), ``"top"`` (layers from the backbone's
    ``top_blocks_from`` on), ``"all"``, or ``"auto"`` (all for small backbones, top for large).

    Batch normalisation: with ``bn_momentum`` (say 0.9) the batch-norm layers that are unfrozen
    *train* — they normalise with each batch's statistics and their running statistics follow
    the new data at that momentum. Without it, a pretrained network's batch-norm layers stay
    frozen (ImageNet statistics); a randomly initialised one's always train. Measured on
    HAM10000 with MobileNet 0.25 (whole network, Adam): frozen batch norm collapsed to one
    class at lr 1e-3 and crawled at 1e-4; training batch norm at momentum 0.9 learned fastest.
    Keras' default momenta (0.99, 0.999 in MobileNetV2) need thousands of steps before the
    running statistics match the data, which is how a model can train well and then predict a
    single class at evaluation.
    """
    import keras

    backbone = get(name)
    net = backbone_of(model)
    if mode == "auto":
        mode = "all" if backbone.small else "top"
    if mode not in ("frozen", "top", "all"):
        raise ValueError(f"mode must be frozen, top, all or auto, got {mode!r}")
    net.trainable = mode != "frozen"
    if mode != "frozen":
        names = [layer.name for layer in net.layers]
        if mode == "all":
            start = 0
        elif backbone.split_layer:
            start = names.index(backbone.split_layer) + 1
        else:
            start = names.index(backbone.top_blocks_from)
        for i, layer in enumerate(net.layers):
            layer.trainable = i >= start
    if bn_momentum is not None:
        for layer in _all_layers(net):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.momentum = bn_momentum
    elif pretrained:
        freeze_batchnorm(net)
    return len(model.trainable_weights)


def summary_table():
    """The registry as a table (for the chapter): input sizes, range, weights available here."""
    import pandas as pd

    folder = weights_dir()
    rows = []
    for b in REGISTRY.values():
        local = folder is not None and (folder / b.weights_file).is_file()
        rows.append({"backbone": b.name, "network": b.display, "min input": b.min_size,
                     "default input": b.default_size, "expects": b.input_range,
                     "fine-tuning": b.top_description,
                     "ImageNet weights here": "yes (local file)" if local else "no: weights=None"})
    return pd.DataFrame(rows).set_index("backbone")
