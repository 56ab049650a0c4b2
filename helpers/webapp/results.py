"""What the web app shows for one decoded photo: every class, honest percentages, Grad-CAM,
and the advice of :mod:`helpers.advice` (is it a lesion photo at all, should you see a doctor,
how good is this model)."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
from PIL import Image

from helpers import DISCLAIMER
from helpers.advice import describe_quality
from helpers.datasets import HAM_CLASS_NAMES
from helpers.decoding import Decoded
from helpers.predict import Predictor, resize

DISPLAY_SIDE = 480
"""Longest side of the image shown back on the page."""
CLASS_NAMES = {**HAM_CLASS_NAMES, "benign": "Benign", "malignant": "Malignant"}
MALIGNANT = frozenset({"mel", "bcc", "akiec", "malignant"})
"""Classes flagged on the page: melanoma, basal cell carcinoma, actinic keratosis /
intraepithelial carcinoma (HAM10000), and melanoma10k's malignant class."""
GRAYSCALE_NOTE = ("This is a grayscale image. It was converted to RGB and classified, but the "
                  "models learned from colour dermoscopy photos and colour carries much of the "
                  "signal: treat this result with extra doubt.")
PROFILE_NOTE = ("The photo's colour profile could not be read, so its colours were used as "
                "stored; they may be slightly off.")
NO_GRADCAM_OOD = ("No Grad-CAM: the photo does not look like a dermoscopic image of a skin "
                  "lesion, so there is no class to explain.")


def percent(p: float) -> str:
    """``p`` as a percentage with one decimal, never rounded up to "100.0%" or down to "0.0%"."""
    text = f"{100 * p:.1f}"
    if text == "100.0" and p < 1:
        return ">99.9%"
    if text == "0.0" and p > 0:
        return "<0.1%"
    return text + "%"


def model_info(predictor: Predictor) -> dict:
    """The loaded model, as the page footer and the API describe it."""
    info = predictor.info
    advisor = predictor.advisor
    quality = advisor.quality if advisor is not None else None
    return {"file": predictor.path.name, "kind": predictor.kind,
            "variant": info.get("variant") if predictor.kind == "tflite" else "keras",
            "task": info.get("task"), "backbone": info.get("backbone"),
            "classes": predictor.classes, "image_size": list(predictor.image_size),
            "quality": quality, "quality_text": describe_quality(quality),
            "model_card": advisor.card if advisor is not None else None,
            "ood_gate": advisor is not None and advisor.gate is not None}


class GradCam:
    """Grad-CAM for the loaded model through :mod:`helpers.explain`, when that is possible."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._features = None
        self._lock = threading.Lock()
        self.reason = None
        if predictor.kind != "keras":
            self.reason = ("Grad-CAM needs the Keras model's gradients; this server runs a "
                           "TFLite model. Start it with the run's model.keras to see the map.")
            return
        try:
            from helpers import explain
        except Exception as err:  # explain is optional: the app works without it
            self.reason = f"Grad-CAM is not available ({type(err).__name__}: {err})."
            return
        self._explain = explain

    @property
    def available(self) -> bool:
        return self.reason is None

    def __call__(self, rgb: np.ndarray, class_index: int) -> np.ndarray | None:
        """The Grad-CAM map (model resolution, 0-1) for one image and class, or None."""
        if not self.available:
            return None
        x = resize(rgb, self.predictor.image_size)[None]
        try:
            with self._lock:
                if self._features is None:
                    self._features = self._explain.feature_model(self.predictor._model)
                cam = self._explain.gradcam(self.predictor._model, x, [class_index],
                                            features=self._features)
        except Exception as err:  # a model the explainer cannot handle: say so, keep serving
            self.reason = f"Grad-CAM failed for this model ({type(err).__name__}: {err})."
            return None
        return cam[0]


def analyse(predictor: Predictor, gradcam: GradCam, photo: Decoded, filename: str, *,
            with_gradcam: bool = True) -> dict:
    """The result for one decoded upload: the JSON the API returns and the page renders.

    Probabilities are renormalised to sum to 1: an int8 model's outputs are dequantized in
    steps of 1/256 and their sum drifts from 1 by a few tenths of a percent. The advice fields
    (``in_distribution``, ``ood``, ``headline``, ``referral``, ``malignant_classes``,
    ``model_quality``, ``model_card``) come from :mod:`helpers.advice` through the predictor; a
    photo the out-of-distribution gate refuses gets no Grad-CAM.
    """
    result = predictor.predict_rgb(photo.rgb)
    probs = np.array(list(result["probabilities"].values()), dtype=np.float64)
    probs = [round(float(p), 6) for p in probs / probs.sum()]
    ranked = sorted(zip(predictor.classes, probs), key=lambda cp: cp[1], reverse=True)
    notes = [GRAYSCALE_NOTE] if photo.grayscale else []
    if photo.colour_profile == "ignored (unreadable)":
        notes.append(PROFILE_NOTE)
    result.update({
        "probabilities": dict(zip(predictor.classes, probs)),
        "predicted_name": CLASS_NAMES.get(result["predicted_class"], result["predicted_class"]),
        "top": [{"class": c, "name": CLASS_NAMES.get(c, c), "probability": p,
                 "percent": percent(p), "malignant": c in MALIGNANT} for c, p in ranked],
        "notes": notes,
        "image": {"filename": filename, **photo.info()},
        "model": model_info(predictor),
        "gradcam": {"available": gradcam.available},
        "disclaimer": DISCLAIMER,
    })
    lesion = result.get("in_distribution") is not False
    if not lesion:
        result["gradcam"]["reason"] = NO_GRADCAM_OOD
    if with_gradcam and gradcam.available and lesion:
        cam = gradcam(photo.rgb, predictor.classes.index(result["predicted_class"]))
        if cam is not None:
            result["gradcam"]["png_base64"] = overlay_png(photo.rgb, cam)
            result["gradcam"]["class"] = result["predicted_class"]
    if not gradcam.available:
        result["gradcam"]["reason"] = gradcam.reason
    return result


def image_data_url(rgb: np.ndarray, max_side: int = DISPLAY_SIDE) -> str:
    """A small JPEG of the image as a ``data:`` URL (the page never links to a stored file)."""
    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def overlay_png(rgb: np.ndarray, cam: np.ndarray, max_side: int = DISPLAY_SIDE,
                alpha: float = 0.45) -> str:
    """The image with a Grad-CAM map (jet colours: blue low, red high) as a base64 PNG."""
    from matplotlib import colormaps

    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side))
    cam_img = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize(
        image.size, Image.BILINEAR)
    heat = (colormaps["jet"](np.asarray(cam_img) / 255.0)[..., :3] * 255).astype(np.float32)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * heat
    buffer = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
