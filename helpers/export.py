"""TFLite (LiteRT) export of a trained run, and the contract a mobile app needs.

One run folder (``book/runs/<profile>/models/<run>/``, written by chapter 03) becomes::

    <run>/tflite/float32.tflite  float32.json   # the contract: sizes, dtypes, ranges, classes
    <run>/tflite/float16.tflite  float16.json   # float16 weights, float32 input and output
    <run>/tflite/int8.tflite     int8.json      # full-integer: uint8 RGB in, uint8 scores out
    <run>/tflite/labels.txt                     # one class per line, in output order
    <run>/tflite/model_card.md                  # the model card (helpers.modelcard), with the
                                                # measured evaluation/referral files beside it

Every model takes one RGB image, the whole picture stretched to the model's size with antialiased
bilinear filtering (:func:`helpers.images.resize_rgb`, as in training); the backbone's own normalisation is inside the graph, so an app never scales pixels
to -1..1 or subtracts ImageNet means itself. The full-integer model takes the raw ``uint8``
pixels (quantization scale 1, zero point 0) and returns ``uint8`` scores to dequantize with the
output scale and zero point written in its contract.

:func:`compare` measures each variant against the Keras model: file size, latency per image
(LiteRT interpreter with 2 threads), agreement of predicted classes and the change in balanced
accuracy and macro AUC on a test split. Educational tool only: not a diagnosis.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import DISCLAIMER, advice, modelcard
from helpers.predict import (NUM_THREADS, contract_path, dequantize_output, load_interpreter,
                             quantize_input)
from helpers.quiet import quiet_fds

VARIANTS: tuple[str, ...] = ("float32", "float16", "int8")
"""Export variants: float32 (reference), float16 weights, full-integer int8 (uint8 I/O)."""
CONTRACT_FORMAT = "skinbook-tflite-contract"
CONTRACT_VERSION = 1


class ExportError(RuntimeError):
    """A conversion failed; the message carries the tail of the converter's log."""


@dataclass(frozen=True)
class Exported:
    """One exported variant: where its files are and how big the model is."""

    variant: str
    tflite: Path
    contract: Path
    labels: Path

    @property
    def size_bytes(self) -> int:
        return self.tflite.stat().st_size


# --- the run folder -------------------------------------------------------------------------

def read_manifest(run_dir: str | Path) -> dict:
    """The ``manifest.json`` of a run folder (classes, image size, backbone, ...)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run folder from chapter 03?")
    return json.loads(path.read_text(encoding="utf-8"))


def load_keras(run_dir: str | Path):
    """The run's ``model.keras`` (uncompiled: only inference is needed here)."""
    import keras

    return keras.models.load_model(Path(run_dir) / "model.keras", compile=False)


# --- conversion -----------------------------------------------------------------------------

def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def representative_images(images: np.ndarray, *, pin_range: bool = True) -> Callable:
    """A converter ``representative_dataset`` over float32 RGB 0-255 images ``(N, H, W, 3)``.

    With ``pin_range`` the first calibration image gets one pixel at 0 and one at 255, so the
    calibrated input range is exactly 0-255 and the uint8 input's quantization is scale 1, zero
    point 0: an app can then copy camera bytes straight in. (Two pixels of one image barely
    move the calibration of anything else.)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"need a non-empty (N, H, W, 3) batch of images, got {images.shape}")

    def generate():
        for i, image in enumerate(images):
            image = image.copy()
            if pin_range and i == 0:
                image[0, 0, :] = 0.0
                image[-1, -1, :] = 255.0
            yield [image[None]]

    return generate


@contextlib.contextmanager
def _quiet_python_logs():
    """Silence TensorFlow's Python-side INFO logs ("Assets written to ...") meanwhile."""
    import logging

    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def quiet_converter() -> Iterator[Path]:
    """Keep the TFLite converter's chatter out of the output meanwhile: its C++ log (sent to a
    file, whose path is yielded, see :func:`helpers.quiet.quiet_fds`), absl's Python notice
    "Please consider providing the trackable_obj argument" (a ``from_concrete_functions``
    deprecation that does not apply to frozen functions), and the int8 converter's "Statistics
    for quantized inputs were expected" (the uint8 input's range comes from calibration)."""
    with quiet_fds() as log, _quiet_python_logs(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield log


def frozen_function(model):
    """The Keras model as a TensorFlow function with a batch-1 float32 RGB input, variables frozen.

    Freezing (variables -> constants) matters twice: full-integer calibration cannot read
    variables (``READ_VARIABLE ... failed``), and converting a frozen function is several
    times faster than writing and re-reading a SavedModel for every variant.
    """
    import tensorflow as tf
    # Not public API, but the utility TFLite itself uses to freeze functions.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    height, width = (int(v) for v in model.input_shape[1:3])

    def serve(image):
        return model(image, training=False)

    spec = tf.TensorSpec([1, height, width, 3], tf.float32, name="image")
    with quiet_fds(), _quiet_python_logs():
        return convert_variables_to_constants_v2(
            tf.function(serve, autograph=False).get_concrete_function(spec))


def convert(source, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """Convert a Keras model (float32 RGB 0-255 input) to one TFLite variant; returns the bytes.

    ``source`` is the Keras model or its :func:`frozen_function` (to convert several variants,
    freeze once). ``variant`` is ``float32``, ``float16`` (weights stored as float16; a CPU
    computes in float32) or ``int8`` (full-integer; the ``calibration`` images, from the
    *training* split, set the activation ranges). The input batch size is fixed to 1, as a
    mobile app classifies one photo at a time.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant == "int8" and calibration is None:
        raise ValueError("the int8 variant needs calibration images from the training split")
    if hasattr(source, "input_shape"):  # a Keras model
        source = frozen_function(source)
    with quiet_converter() as log:
        try:
            content = _convert_function(source, variant, calibration)
        except Exception as err:  # the converter raises many types; show its log to the reader
            error, tail = err, _log_tail(log)
        else:
            error = None
    if error is not None:
        raise ExportError(f"TFLite conversion to {variant} failed: {error}\n{tail}") from error
    return content


def _int8_converter(frozen, calibration: np.ndarray):
    """A converter to full-integer int8 with uint8 input and output, calibrated on images."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_images(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def _convert_function(frozen, variant: str, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    if variant == "int8":
        return _int8_converter(frozen, calibration).convert()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _tensor_contract(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"]).name
    quantized = not np.issubdtype(detail["dtype"], np.floating)
    return {
        "name": detail["name"],
        "shape": [int(v) for v in detail["shape"]],
        "dtype": dtype,
        "quantization": ({"scale": float(scale), "zero_point": int(zero_point)}
                         if quantized else None),
    }


def make_contract(tflite_path: Path, manifest: dict, variant: str) -> dict:
    """The JSON contract of an exported model, read from the model's own tensors."""
    interpreter = load_interpreter(tflite_path, num_threads=1)
    inp = _tensor_contract(interpreter.get_input_details()[0])
    out = _tensor_contract(interpreter.get_output_details()[0])
    _, height, width, channels = inp["shape"]
    quant_in = inp["quantization"]
    if quant_in is None:
        value_note = "float32 RGB values 0-255, not normalised (normalisation is in the model)"
        value_range = [0.0, 255.0]
    elif quant_in == {"scale": 1.0, "zero_point": 0}:
        value_note = "uint8 RGB bytes 0-255 as they come from the decoded image (scale 1, zero point 0)"
        value_range = [0, 255]
    else:
        value_note = "quantize RGB 0-255 values: q = round(x / scale + zero_point)"
        value_range = [0, 255]
    if out["quantization"] is None:
        out_note = "float32 probabilities (softmax), one per class in label order, summing to 1"
    else:
        out_note = ("uint8 scores; probability = scale * (q - zero_point), one per class in "
                    "label order")
    classes = list(manifest["classes"])
    return {
        "format": CONTRACT_FORMAT,
        "format_version": CONTRACT_VERSION,
        "model_file": tflite_path.name,
        "labels_file": "labels.txt",
        "sha256": hashlib.sha256(tflite_path.read_bytes()).hexdigest(),
        "size_bytes": tflite_path.stat().st_size,
        "variant": variant,
        "task": manifest.get("task"),
        "backbone": manifest.get("backbone"),
        "run_variant": manifest.get("variant"),
        "profile": manifest.get("profile"),
        "classes": classes,
        "input": {
            **inp,
            "height": int(height),
            "width": int(width),
            "channels": int(channels),
            "layout": "NHWC",
            "color_order": "RGB",
            "value_range": value_range,
            "values": value_note,
        },
        "output": {**out, "values": out_note},
        "preprocessing": [
            "Decode the JPEG/PNG to RGB (grayscale: copy to 3 channels; alpha: composite on white).",
            f"Resize the whole image to {width}x{height} (width x height) with antialiased "
            "bilinear filtering, as TensorFlow's tf.image.resize(antialias=True) (the training "
            "images were made that way): when shrinking, each output pixel is the weighted "
            "mean of all the input pixels it covers. No crop, no padding. A plain bilinear "
            "resize without antialiasing (the default of many mobile image libraries) samples "
            "only 4 pixels and changes predictions when shrinking more than 2x: shrink in steps "
            "of at most 2x, or use an area filter.",
            "Keep pixel values 0-255 in RGB order, row-major, shape [1, height, width, 3]; the "
            "backbone's normalisation is inside the model.",
            "Float models: feed float32. Full-integer model: feed uint8 (quantize with the "
            "input scale/zero point if they are not 1/0).",
        ],
        "postprocessing": "Dequantize integer outputs (probability = scale * (q - zero_point)); "
                          "the predicted class is the label with the highest probability.",
        "disclaimer": DISCLAIMER,
    }


def export_run(run_dir: str | Path, calibration: np.ndarray | None = None, *,
               variants: tuple[str, ...] = VARIANTS, out_dir: str | Path | None = None,
               model=None) -> dict[str, Exported]:
    """Convert a run's ``model.keras`` to each variant; write models, labels and contracts.

    ``calibration`` (float32 RGB 0-255 images from the training split) is needed for ``int8``.
    Files go to ``<run>/tflite/`` unless ``out_dir`` is given. Returns ``{variant: Exported}``.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    model = model if model is not None else load_keras(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "tflite"
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = out_dir / "labels.txt"
    labels.write_text("\n".join(manifest["classes"]) + "\n", encoding="utf-8")
    exported = {}
    frozen = frozen_function(model)
    for variant in variants:
        path = out_dir / f"{variant}.tflite"
        path.write_bytes(convert(frozen, variant, calibration))
        exported[variant] = path
    for variant, path in exported.items():
        contract = make_contract(path, manifest, variant)
        contract["model_card"] = modelcard.CARD_FILE
        contract["advice"] = advice.contract_note()  # the result fields beside probabilities
        cpath = contract_path(path)
        cpath.write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
        exported[variant] = Exported(variant=variant, tflite=path, contract=cpath, labels=labels)
    modelcard.ship(run_dir, out_dir)  # the model card (and measured results) beside every export
    return exported


def _layer_name(tensor_name: str, op: str) -> str:
    """The Keras layer of a TFLite tensor: a fused op's name lists every op folded into it
    (``model/backbone/block_3_project_BN/batchnorm/add_1;...``); the first names the layer."""
    parts = tensor_name.split(";")[0].split("/")[1:-1]
    parts = [p for p in parts if not p.startswith("backbone_") and p != "batchnorm"]
    return parts[-1].removesuffix("_1") if parts else op.lower()


def layer_errors(model, calibration: np.ndarray, *, debug_images: int = 8) -> pd.DataFrame:
    """Where full-integer quantization loses: each int8 layer's error against float, in steps.

    Runs TensorFlow Lite's ``QuantizationDebugger`` on the int8 conversion (calibrated with
    ``calibration``, training images) over ``debug_images`` of them. ``error_in_steps`` is the
    root-mean-square difference between the int8 layer's output and the float model's, divided
    by the layer's quantization step: uniform rounding alone gives 0.29 (1/sqrt(12)); larger
    values mean errors that the layers before passed on, or an activation range too wide for
    its typical values. Rows follow the network from input to output.
    """
    import io

    import tensorflow as tf

    calibration = np.asarray(calibration, dtype=np.float32)
    frozen = frozen_function(model)
    buffer = io.StringIO()
    with quiet_converter(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = _int8_converter(frozen, calibration)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_images(calibration[:debug_images], pin_range=False))
        debugger.run()
        debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    stats = pd.read_csv(buffer)
    return pd.DataFrame({
        "op": stats["op_name"],
        "layer": [_layer_name(t, op) for t, op in zip(stats["tensor_name"], stats["op_name"])],
        "error_in_steps": np.sqrt(stats["mean_squared_error"]) / stats["scale"],
    })


# --- images as the models saw them ---------------------------------------------------------

def pipeline_images(table: pd.DataFrame, classes, image_size: tuple[int, int], *,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of a sample table through the training pipeline (no augmentation).

    The same decoding and resizing as chapter 03 (:func:`helpers.images.make_dataset`), so the
    Keras numbers here match the run's own predictions. Images are float32 RGB 0-255.
    """
    from helpers import images

    with _quiet_python_logs():  # AutoGraph's "could not transform <lambda>" notice
        ds = images.make_dataset(table, classes, image_size, batch_size=batch_size, cache=False)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def calibration_images(table: pd.DataFrame, classes, image_size: tuple[int, int], n: int, *,
                       seed: int = 42) -> np.ndarray:
    """``n`` training-split images (stratified-ish random sample) for int8 calibration.

    Only the training split: calibrating on test images would let the test set shape the
    quantized model, a small leak.
    """
    train = table[table["split"] == "train"]
    if len(train) == 0:
        raise ValueError("the table has no training rows to calibrate with")
    rows = train.sample(min(n, len(train)), random_state=seed)
    return pipeline_images(rows, classes, image_size)[0]


def files_table(exported: dict[str, Exported]) -> pd.DataFrame:
    """The files an app ships: model, contract and labels of each variant, with sizes."""
    rows = []
    for item in exported.values():
        for path in (item.tflite, item.contract, item.labels):
            rows.append({"variant": item.variant, "file": path.name,
                         "size_kb": round(path.stat().st_size / 1024, 1)})
    return pd.DataFrame(rows).drop_duplicates("file").reset_index(drop=True)


# --- evaluation -----------------------------------------------------------------------------

def run_tflite(path: str | Path, images: np.ndarray, num_threads: int = NUM_THREADS) -> np.ndarray:
    """Probabilities ``(N, n_classes)`` of a ``.tflite`` model, one image at a time."""
    interpreter = load_interpreter(path, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    result = []
    for image in np.asarray(images, dtype=np.float32):
        interpreter.set_tensor(inp["index"], quantize_input(image[None], inp))
        interpreter.invoke()
        result.append(dequantize_output(interpreter.get_tensor(out["index"])[0], out))
    return np.stack(result)


def latency_ms(predict_one: Callable[[np.ndarray], object], images: np.ndarray, *,
               warmup: int = 3, repeats: int = 3) -> float:
    """Median wall time (ms) of ``predict_one`` on single images (batch of 1), after warm-up."""
    images = np.asarray(images, dtype=np.float32)
    for image in images[:warmup]:
        predict_one(image[None])
    times = []
    for _ in range(repeats):
        for image in images:
            tick = time.perf_counter()
            predict_one(image[None])
            times.append(time.perf_counter() - tick)
    return 1000.0 * float(np.median(times))


def keras_predict_one(model) -> Callable[[np.ndarray], np.ndarray]:
    """The Keras model as a compiled ``tf.function`` on one image: its fair CPU speed."""
    import tensorflow as tf

    height, width = (int(v) for v in model.input_shape[1:3])

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    def call(image):
        return model(image, training=False)

    return lambda image: call(image).numpy()


def tflite_predict_one(path: str | Path, num_threads: int = NUM_THREADS):
    """A LiteRT interpreter for ``path`` wrapped as a one-image function (for :func:`latency_ms`)."""
    interpreter = load_interpreter(path, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def call(image):
        interpreter.set_tensor(inp["index"], quantize_input(image, inp))
        interpreter.invoke()
        return dequantize_output(interpreter.get_tensor(out["index"]), out)

    return call


def scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and macro AUC (classes present in ``labels``) from :mod:`helpers.metrics`."""
    from helpers import metrics

    return {"balanced_accuracy": metrics.balanced_accuracy(labels, probs),
            "macro_auc": metrics.macro_auc(labels, probs)}


def compare(model, exported: dict[str, Exported], images: np.ndarray, labels: np.ndarray, *,
            keras_path: str | Path | None = None, latency_images: int = 20,
            repeats: int = 3) -> pd.DataFrame:
    """One table: Keras model vs each TFLite variant on the same test images.

    Columns: size (MB), latency per image (ms, batch 1; LiteRT with 2 threads), agreement of
    predicted classes with Keras, balanced accuracy and macro AUC with their change from Keras.
    Latency is a median over ``latency_images`` images x ``repeats``: on a shared machine
    expect a few percent of noise.
    """
    labels = np.asarray(labels)
    images = np.asarray(images, dtype=np.float32)
    sample = images[:latency_images]
    reference = np.asarray(model.predict(images, batch_size=32, verbose=0))
    rows = [{"model": "keras (float32)",
             "size_mb": Path(keras_path).stat().st_size / 1e6 if keras_path else np.nan,
             "latency_ms": latency_ms(keras_predict_one(model), sample, repeats=repeats),
             "agreement": 1.0, **scores(labels, reference)}]
    for variant, item in exported.items():
        probs = run_tflite(item.tflite, images)
        rows.append({"model": f"tflite {variant}", "size_mb": item.size_bytes / 1e6,
                     "latency_ms": latency_ms(tflite_predict_one(item.tflite), sample,
                                              repeats=repeats),
                     "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
                     **scores(labels, probs)})
    table = pd.DataFrame(rows).set_index("model")
    base = table.loc["keras (float32)"]
    table["d_balanced_accuracy"] = table["balanced_accuracy"] - base["balanced_accuracy"]
    table["d_macro_auc"] = table["macro_auc"] - base["macro_auc"]
    return table


def check_targets(table: pd.DataFrame, *, max_size_ratio: float = 1 / 3,
                  max_drop: float = 0.01) -> pd.DataFrame:
    """Chapter 07's targets for the int8 model against the float32 TFLite model, measured."""
    f32, i8 = table.loc["tflite float32"], table.loc["tflite int8"]
    ratio = i8["size_mb"] / f32["size_mb"]
    change = i8["balanced_accuracy"] - f32["balanced_accuracy"]
    speedup = f32["latency_ms"] / i8["latency_ms"]
    rows = [
        ("int8 size / float32 size", f"<= {max_size_ratio:.2f}", f"{ratio:.2f}",
         ratio <= max_size_ratio),
        ("balanced accuracy change (int8 - float32)", f"within +-{max_drop:.2f}",
         f"{change:+.3f}", abs(change) <= max_drop),
        ("latency speed-up (float32 / int8)", "> 1", f"{speedup:.2f}x", speedup > 1),
    ]
    return pd.DataFrame(rows, columns=["target", "wanted", "measured", "met"]).set_index("target")
