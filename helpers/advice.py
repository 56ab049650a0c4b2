"""What a prediction must say beside its probabilities: is this a lesion, should you see a
doctor, how good is this model, where is its card.

The chapter "Before a model meets a patient" saves, beside a model file, the out-of-distribution
gate (``ood.npz``/``ood.json``, :mod:`helpers.ood`), the referral rule (``referral.json``,
:mod:`helpers.referral`), the measured test metrics (``evaluation.json``) and the model card
(``model_card.md``, :mod:`helpers.modelcard`); chapter 07's export copies all but the gate
beside the ``.tflite`` files. :class:`Advisor` loads whatever is there and :meth:`Advisor.assess`
adds the same fields to every result of :mod:`helpers.predict` and of the web app's
``/api/predict``:

=====================  ============================================================================
``in_distribution``    ``true``/``false``: did the gate accept the photo as a dermoscopic image of
                       a skin lesion; ``null`` when no gate is available (TFLite models, runs the
                       chapter has not processed)
``ood``                the gate's verdict: ``available``, ``score`` (the larger distance over its
                       threshold; accepted when at most 1), ``distances``, ``thresholds``,
                       ``reasons`` and ``message``; or ``available: false`` with the ``reason``
``headline``           what to show first: "Most likely: <class name>", or the out-of-distribution
                       message instead of any class
``referral``           the advice (:func:`helpers.referral.advise`): ``level`` (``not_a_lesion``,
                       ``see_a_doctor_soon``, ``unsure``, ``no_flag``, or ``null`` without a rule),
                       ``message``, ``confidence`` (temperature-scaled top probability),
                       ``unsure_threshold``, ``malignant_score``, ``malignant_threshold``,
                       ``malignant_high``
``malignant_classes``  the classes flagged as malignant (mel, bcc, akiec; melanoma10k: malignant)
``model_quality``      the loaded model's measured balanced accuracy with its 95% interval
                       (``balanced_accuracy``, ``low``, ``high``, ``split``, ``n_images``,
                       ``n_lesions``, ``profile``, ``interval``), or ``null`` if never measured
``model_card``         the card's file name beside the model (the web app serves it at
                       ``/model-card``), or ``null``
=====================  ============================================================================

The raw ``predicted_class`` and ``probabilities`` stay in the result for scripts; a client must
show ``headline`` and ``referral.message``, not the class, when ``in_distribution`` is false.
Educational tool only: none of this is a diagnosis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.datasets import HAM_CLASS_NAMES

CLASS_NAMES = {**HAM_CLASS_NAMES, "benign": "Benign", "malignant": "Malignant"}
MALIGNANT = ("akiec", "bcc", "mel", "malignant")
"""Classes flagged as malignant wherever they appear (HAM10000's three, melanoma10k's one)."""
REASONS = {
    "features": "the model does not recognise anything like the skin lesions it learnt from",
    "appearance": "its colours and texture are unlike those of a dermoscopic photo of skin",
}
"""Why the gate refused a photo, per distance that was over its threshold."""
FIELDS = ("in_distribution", "ood", "headline", "referral", "malignant_classes",
          "model_quality", "model_card")
"""The keys :meth:`Advisor.assess` adds to a prediction result (documented above)."""
CONTRACT_NOTE = {
    "fields": {
        "in_distribution": "true/false: the out-of-distribution gate accepted the photo as a "
                           "dermoscopic image of a skin lesion; null: no gate for this model "
                           "(TFLite exports have no features output, so apps run without it)",
        "headline": "what to show first: 'Most likely: <class>' or the out-of-distribution "
                    "message instead of any class",
        "referral.level": "not_a_lesion | see_a_doctor_soon | unsure | no_flag (null without "
                          "referral.json)",
        "referral.message": "the advice to show with every result",
        "referral.confidence": "temperature-scaled top probability; unsure below "
                               "referral.unsure_threshold",
        "referral.malignant_score": "temperature-scaled p(mel) + p(bcc) + p(akiec); "
                                    "see_a_doctor_soon at or above referral.malignant_threshold",
        "malignant_classes": "classes to flag as malignant",
        "model_quality": "measured test balanced accuracy with its lesion-grouped 95% interval "
                         "(evaluation.json), or null",
        "model_card": "file name of the model card beside the model (model_card.md)",
    },
    "apply_on_device": "An app reproduces the referral advice from referral.json beside the "
                       "model: scale the probabilities with its temperature "
                       "(softmax(log(p) / T)), then apply unsure_threshold to the top "
                       "probability and malignant_threshold to the malignant sum, the "
                       "malignant rule first.",
    "files": ["referral.json", "evaluation.json", "model_card.md"],
}
"""What the exported models' JSON contract says about these fields (:mod:`helpers.export`)."""


@dataclass
class Advisor:
    """The files beside one model, loaded once; :meth:`assess` turns probabilities into advice."""

    folder: Path
    classes: list[str]
    gate: object = None
    gate_reason: str | None = None
    policy: object = None
    quality: dict | None = None
    card: str | None = None
    _two_outputs: object = field(default=None, repr=False)

    @classmethod
    def load(cls, model_path: str | Path, classes: list[str], *, kind: str,
             model=None) -> Advisor:
        """Read the gate (Keras models only), the referral rule, the quality and the card."""
        from helpers import modelcard, ood, referral

        model_path = Path(model_path)
        folder = model_path.parent
        advisor = cls(folder=folder, classes=list(classes))
        if kind == "keras" and model is not None:
            advisor.gate, advisor.gate_reason = ood.load_gate(model_path)
            if advisor.gate is not None:
                advisor._two_outputs = ood.two_output_model(model)
        else:
            advisor.gate_reason = ("the out-of-distribution check needs the Keras model's "
                                   "features, which an exported TFLite model does not output: "
                                   "this model answers any picture, lesion or not")
        if (folder / referral.POLICY_FILE).is_file():
            policy = referral.ReferralPolicy.load(folder)
            if policy.classes == advisor.classes:
                advisor.policy = policy
        advisor.quality = modelcard.quality(folder)
        if (folder / modelcard.CARD_FILE).is_file():
            advisor.card = modelcard.CARD_FILE
        return advisor

    @property
    def needs_features(self) -> bool:
        return self._two_outputs is not None

    def features_and_probs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the Keras model: pooled features and probabilities."""
        features, probs = self._two_outputs(np.asarray(pixels, dtype=np.float32),
                                            training=False)
        return np.asarray(features), np.asarray(probs, dtype=np.float32)

    def verdict(self, pixels: np.ndarray, features) -> dict:
        """The gate's verdict for one resized image (``(1, H, W, 3)`` float32 RGB 0-255)."""
        from helpers import ood

        if self.gate is None or features is None:
            return {"available": False, "reason": self.gate_reason}
        check = self.gate.check(features, ood.image_statistics(pixels))[0]
        reasons = [REASONS[part] for part in ood.PARTS
                   if check["distances"][part] > check["thresholds"][part]]
        check["reasons"] = reasons
        if reasons:
            check["message"] = (f"This does not look like a dermoscopic image of a skin lesion "
                                f"({' and '.join(reasons)}), so the model gives no answer for "
                                f"it.")
        return {"available": True, **check}

    def assess(self, probs, pixels: np.ndarray, features=None) -> dict:
        """The fields of :data:`FIELDS` for one image's probabilities."""
        from helpers import referral

        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        verdict = self.verdict(pixels, features)
        accepted = verdict.get("in_distribution") if verdict["available"] else None
        advice = referral.advise(probs, self.policy, in_distribution=accepted,
                                 names=CLASS_NAMES)
        if accepted is False:
            advice["message"] = verdict["message"] + " If you are worried about a skin lesion, " \
                                                     "see a doctor."
            headline = verdict["message"]
        else:
            top = self.classes[int(np.argmax(probs))]
            headline = f"Most likely: {CLASS_NAMES.get(top, top)}"
        return {"in_distribution": accepted, "ood": verdict, "headline": headline,
                "referral": advice,
                "malignant_classes": [c for c in self.classes if c in MALIGNANT],
                "model_quality": self.quality, "model_card": self.card}


def describe_quality(quality: dict | None) -> str:
    """One sentence on the model's measured balanced accuracy, for pages and the command line."""
    if not quality:
        return ("This model's accuracy was never measured with an interval (run the chapter "
                "'Before a model meets a patient').")
    return (f"Measured balanced accuracy of this model: {quality['balanced_accuracy']:.2f} "
            f"(95% CI {quality['low']:.2f}-{quality['high']:.2f}) on {quality['n_images']} "
            f"{quality['split']} images of profile {quality['profile']}.")


def contract_note() -> dict:
    """A copy of :data:`CONTRACT_NOTE` (for JSON contracts)."""
    return json.loads(json.dumps(CONTRACT_NOTE))
