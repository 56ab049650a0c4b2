"""Predict skin-lesion classes for image files with a saved model (educational, not a diagnosis).

    python -m helpers.predict --model book/runs/smoke/models/<run>/model.keras IMAGE...
    python -m helpers.predict --model book/runs/smoke/models/<run>/tflite/int8.tflite IMAGE...

Prints one JSON object per image (one per line): the file, the predicted class and every class
probability, and what the chapter "Before a model meets a patient" measured for the model
(:mod:`helpers.advice`): whether the photo looks like a dermoscopic image of a skin lesion at all
(``in_distribution``, ``ood``), the ``headline`` to show, the referral advice (``referral``),
the malignant classes, the model's measured balanced accuracy with its interval
(``model_quality``) and its ``model_card``. A file that cannot be read gets
``{"file": ..., "error": ...}`` and the others still run; the exit status is 1 if any file failed.

Only the saved model and its description are needed, never the training code:

* a ``.keras`` model reads its classes and image size from ``manifest.json`` in the same folder
  (the run folder written by chapter 03);
* a ``.tflite`` model reads them from its JSON contract (``<name>.json`` beside it, written by
  :mod:`helpers.export`). The TFLite path imports only LiteRT, not TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.decoding import decode
from helpers.images import ImageError
from helpers.quiet import quiet_fds

NUM_THREADS = 2
"""Threads given to the LiteRT interpreter (the book's reference CPU has 2 cores)."""


class ModelError(RuntimeError):
    """A model or its manifest/contract is missing or inconsistent; the message says which."""


def contract_path(tflite_path: str | Path) -> Path:
    """Where the JSON contract of a ``.tflite`` file lives: same folder, same name, ``.json``."""
    return Path(tflite_path).with_suffix(".json")


def resize(rgb: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 RGB array to ``image_size`` (H, W): float32 RGB 0-255.

    The whole image is stretched to the model's size (no crop) by the same function that made
    the training images (:func:`helpers.images.resize_rgb`: bilinear with antialiasing), which
    is what a mobile app must reproduce (see the contract's ``preprocessing`` section).
    """
    from helpers.images import resize_rgb

    return resize_rgb(rgb, image_size)


@dataclass
class Predictor:
    """A loaded model: classes, input size and a ``predict`` over float32 RGB 0-255 batches."""

    path: Path
    kind: str  # "keras" or "tflite"
    classes: list[str]
    image_size: tuple[int, int]
    info: dict = field(default_factory=dict)
    _model: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    advisor: object = None
    """The gate, referral rule and measured quality beside the model (:mod:`helpers.advice`)."""

    # --- batch prediction -------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` for float32 RGB 0-255 images ``(N, H, W, 3)``."""
        images = np.asarray(images, dtype=np.float32)
        expected = (*self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"expected images of shape (N, {expected[0]}, {expected[1]}, 3), "
                             f"got {images.shape}")
        with self._lock:  # a LiteRT interpreter is not thread-safe; the web app is threaded
            if self.kind == "keras":
                return np.asarray(self._model(images, training=False), dtype=np.float32)
            return np.stack([_run_tflite(self._model, image) for image in images])

    # --- one image, any size ----------------------------------------------------------------
    def predict_rgb(self, rgb: np.ndarray) -> dict:
        """Predict one ``(H, W, 3)`` uint8 RGB image of any size; a JSON-ready result dict
        with the advice fields of :mod:`helpers.advice` when an advisor is loaded."""
        pixels = resize(rgb, self.image_size)[None]
        features = None
        if self.advisor is not None and self.advisor.needs_features:
            with self._lock:  # one pass gives the gate's features and the probabilities
                features, probs = self.advisor.features_and_probs(pixels)
            probs = probs[0]
        else:
            probs = self.predict(pixels)[0]
        result = result_dict(probs, self.classes)
        if self.advisor is not None:
            result.update(self.advisor.assess(probs, pixels, features))
        return result

    def predict_file(self, path: str | Path) -> dict:
        """Predict one image file (JPEG, PNG or WebP; grayscale, RGBA...): the result with ``file``.

        The file is decoded by :func:`helpers.decoding.decode`, exactly as the web app decodes
        an upload (same formats, limits and messages).
        """
        rgb = decode(path).rgb
        return {"file": str(path), **self.predict_rgb(rgb)}


def result_dict(probs: np.ndarray, classes: list[str]) -> dict:
    """``{"predicted_class", "probabilities": {class: p}}``, probabilities in class order."""
    probs = np.asarray(probs, dtype=np.float64)
    return {
        "predicted_class": classes[int(np.argmax(probs))],
        "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs)},
    }


# --- loading --------------------------------------------------------------------------------

def load(path: str | Path) -> Predictor:
    """Load a ``.keras`` model (with its run folder's manifest) or a ``.tflite`` (with contract)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix == ".keras":
        predictor = _load_keras(path)
    elif path.suffix == ".tflite":
        predictor = _load_tflite(path)
    else:
        raise ModelError(f"{path}: expected a .keras or .tflite model file")
    from helpers.advice import Advisor

    predictor.advisor = Advisor.load(path, predictor.classes, kind=predictor.kind,
                                     model=predictor._model if predictor.kind == "keras" else None)
    return predictor


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ModelError(f"{what} not found at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{what} at {path} is not valid JSON: {err}") from err


def _load_keras(path: Path) -> Predictor:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    manifest = _read_json(path.parent / "manifest.json", "the run's manifest.json")
    try:
        classes = list(manifest["classes"])
        image_size = tuple(int(v) for v in manifest["image_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path.parent / 'manifest.json'} lacks classes/image_size: {err}") from err
    import keras

    model = keras.models.load_model(path, compile=False)
    n_out = int(model.output_shape[-1])
    if n_out != len(classes):
        raise ModelError(f"{path} has {n_out} outputs but its manifest lists {len(classes)} classes")
    return Predictor(path=path, kind="keras", classes=classes, image_size=image_size,
                     info=manifest, _model=model)


def load_interpreter(path: str | Path, num_threads: int = NUM_THREADS):
    """A LiteRT interpreter for a ``.tflite`` file, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_fds():  # LiteRT prints "INFO: Created ... XNNPACK delegate" to fd 2
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
        except ValueError as err:
            error = err
        else:
            error = None
    if error is not None:
        raise ModelError(f"{path}: not a usable TFLite model ({error})") from error
    return interpreter


def _load_tflite(path: Path) -> Predictor:
    contract = _read_json(contract_path(path), "the model's JSON contract")
    try:
        classes = list(contract["classes"])
        image_size = (int(contract["input"]["height"]), int(contract["input"]["width"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{contract_path(path)} lacks classes/input size: {err}") from err
    interpreter = load_interpreter(path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if tuple(inp["shape"][1:3]) != image_size:
        raise ModelError(f"{path} expects {tuple(inp['shape'][1:3])} pixels but its contract "
                         f"says {image_size}")
    if int(out["shape"][-1]) != len(classes):
        raise ModelError(f"{path} has {out['shape'][-1]} outputs but its contract lists "
                         f"{len(classes)} classes")
    return Predictor(path=path, kind="tflite", classes=classes, image_size=image_size,
                     info=contract, _model=interpreter)


def quantize_input(image: np.ndarray, detail: dict) -> np.ndarray:
    """Turn float32 RGB 0-255 into what an input tensor wants (float, or quantized integers)."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return image.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(image / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, detail: dict) -> np.ndarray:
    """Output tensor values as float32 probabilities (dequantized if the tensor is integer)."""
    if np.issubdtype(detail["dtype"], np.floating):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def _run_tflite(interpreter, image: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], quantize_input(image[None], inp))
    interpreter.invoke()
    return dequantize_output(interpreter.get_tensor(out["index"])[0], out)


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.predict",
        description="Predict skin-lesion classes for images (educational, not a diagnosis).")
    parser.add_argument("--model", required=True, type=Path,
                        help="a run folder's model.keras, or an exported .tflite with its .json")
    parser.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG or WebP)")
    args = parser.parse_args(argv)
    try:
        predictor = load(args.model)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            result = predictor.predict_file(path)
        except ImageError as err:  # helpers.decoding's refusals (the web app's messages)
            failed += 1
            result = {"file": str(path), "error": str(err)}
        print(json.dumps(result), flush=True)
    if failed:
        print(f"{failed} of {len(args.images)} image(s) could not be read.", file=sys.stderr)
    from helpers import DISCLAIMER
    from helpers.advice import describe_quality

    print(describe_quality(predictor.advisor.quality), file=sys.stderr)
    print(DISCLAIMER, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
