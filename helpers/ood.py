"""Is this a dermoscopic image of a skin lesion at all? An out-of-distribution gate.

A classifier trained on seven lesion types answers one of those seven for *any* input: random
noise, a red square, a photo of a cat. The gate refuses images that are far from the training
images in two ways, each measured by a Mahalanobis distance (Lee et al., NeurIPS 2018):

``features``
    where the image lands in the model's own feature space (the pooled ``features`` layer every
    model of this book has, just before the softmax head): the squared distance to the nearest
    *class* mean of the training split, with one shared covariance (Ledoit-Wolf shrinkage,
    since there can be fewer training images than feature dimensions).
``appearance``
    what the picture looks like at the model's input size: its colours, how the colour channels
    move together, how much texture and coarse structure it has, and whether its centre differs
    from its border (:func:`image_statistics`; a dozen numbers). A lesion photo is skin-coloured
    with a darker blob in the middle; noise, solid colours and most everyday photos are not.

Why two: on a model that has learnt little, noise and solid colours land *among* the lesions in
feature space (after resizing, noise is a mottled grey), while the appearance statistics tell
them apart at once; everyday photos are caught by both. An image is accepted when both
distances are under their thresholds, set on in-distribution *validation* images only so that
95% of them pass (``recall``, :func:`joint_thresholds`). For comparison, :func:`energy_score`
(Liu et al., NeurIPS 2020) and :func:`msp_score` (the top softmax probability: noise can score
80%) score the same images.

The fitted gate is saved beside the model as ``ood.npz`` (means, precision matrices,
thresholds, the validation scores they came from) and ``ood.json`` (settings and what the
chapter measured), so :mod:`helpers.predict` and the web app load it with :func:`load_gate`.

:func:`everyday_photos` and :func:`synthetic_images` build the out-of-distribution test set from
photos shipped inside installed packages (scikit-learn's and matplotlib's sample images) and
generated inputs (noise, solid colours, patterns); :func:`heavy_blur` degrades lesion photos.
Educational tool only: passing the gate does not make an answer a diagnosis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.download import file_digest

GATE_FILE = "ood.npz"
INFO_FILE = "ood.json"
FEATURE_LAYER = "features"
DEFAULT_RECALL = 0.95
PARTS = ("features", "appearance")
"""The gate's two distances, in the column order of its scores."""
OOD_MESSAGE = ("This does not look like a dermoscopic image of a skin lesion, so the model "
               "gives no answer for it.")
STATISTICS = ("mean red", "mean green", "mean blue", "log spread red", "log spread green",
              "log spread blue", "correlation red-green", "correlation green-blue",
              "correlation red-blue", "log texture", "log coarse structure",
              "centre minus border brightness")
"""The columns of :func:`image_statistics`."""


def image_statistics(images) -> np.ndarray:
    """A dozen numbers per image describing what it looks like (see :data:`STATISTICS`).

    ``images`` is ``(N, H, W, 3)`` RGB 0-255 at the model's input size. Colour: the channel
    means (0-1) and log spreads; the correlations between channels (noise: near 0; photos:
    near 1; 0 where a channel is flat); texture: the log mean absolute brightness step between
    neighbouring pixels; coarse structure: the log spread of a 4x4 grid of block means; and the
    centre's mean brightness minus the border's (0-1; lesions are darker than the skin around).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got {x.shape}")
    n, h, w, _ = x.shape
    flat = x.reshape(n, -1, 3)
    centred = flat - flat.mean(axis=1, keepdims=True)
    columns = [flat.mean(axis=1) / 255, np.log1p(flat.std(axis=1))]
    corr = []
    for a, b in ((0, 1), (1, 2), (0, 2)):
        den = np.sqrt((centred[..., a] ** 2).sum(1) * (centred[..., b] ** 2).sum(1))
        corr.append(np.where(den > 0, (centred[..., a] * centred[..., b]).sum(1)
                             / np.maximum(den, 1e-12), 0.0))
    columns.append(np.stack(corr, axis=1))
    lum = x @ np.array([0.299, 0.587, 0.114])
    texture = np.abs(np.diff(lum, axis=1)).mean((1, 2)) + np.abs(np.diff(lum, axis=2)).mean((1, 2))
    bh, bw = h // 4, w // 4
    blocks = lum[:, :4 * bh, :4 * bw].reshape(n, 4, bh, 4, bw).mean(axis=(2, 4))
    inner = lum[:, bh:h - bh, bw:w - bw]
    border = (lum.sum((1, 2)) - inner.sum((1, 2))) / max(1, h * w - inner.shape[1] * inner.shape[2])
    columns += [np.log1p(texture)[:, None], np.log1p(blocks.reshape(n, -1).std(axis=1))[:, None],
                ((inner.mean((1, 2)) - border) / 255)[:, None]]
    return np.concatenate(columns, axis=1)


# --- the model's features -------------------------------------------------------------------

def feature_layer(model):
    """The pooled-features layer: ``features`` (chapter 03's models), else the input of the
    last Dense layer's producer (a model built another way)."""
    import keras

    try:
        return model.get_layer(FEATURE_LAYER)
    except ValueError:
        pass
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    pools = [layer for layer in model.layers
             if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not dense or not pools:
        raise ValueError(f"model {model.name!r} has no layer named {FEATURE_LAYER!r} and no "
                         f"global pooling + Dense head to take features from")
    return pools[-1]


def head_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of the softmax head (the last Dense layer): ``logits = f @ W + b``."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"model {model.name!r} has no Dense head")
    kernel, bias = dense[-1].get_weights()
    return kernel.astype(np.float64), bias.astype(np.float64)


def two_output_model(model):
    """A model sharing ``model``'s layers that returns ``[features, probabilities]``."""
    import keras

    return keras.Model(model.inputs[0], [feature_layer(model).output, model.outputs[0]])


@dataclass
class Outputs:
    """What a batch of images gives: pooled features, logits, probabilities and the
    appearance statistics of the images themselves (:func:`image_statistics`)."""

    features: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    stats: np.ndarray

    KEYS = ("features", "logits", "probs", "stats")

    def __len__(self) -> int:
        return len(self.probs)

    def subset(self, index) -> Outputs:
        return Outputs(*(getattr(self, k)[index] for k in self.KEYS))

    def to_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_dict(cls, data, prefix: str = "") -> Outputs:
        return cls(*(data[f"{prefix}{k}"] for k in cls.KEYS))

    @classmethod
    def concat(cls, parts: list[Outputs]) -> Outputs:
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in cls.KEYS))


def compute_outputs(model, batches, *, two_outputs=None) -> Outputs:
    """Run ``model`` over ``batches`` (arrays ``(n, H, W, 3)`` float32 RGB 0-255, or a
    ``tf.data`` dataset of ``(images, labels)``): features, logits, probabilities, statistics."""
    two_outputs = two_outputs or two_output_model(model)
    kernel, bias = head_weights(model)
    feats, probs, stats = [], [], []
    for batch in batches:
        x = np.asarray(batch[0] if isinstance(batch, tuple) else batch, dtype=np.float32)
        f, p = two_outputs(x, training=False)
        feats.append(np.asarray(f, dtype=np.float32))
        probs.append(np.asarray(p, dtype=np.float32))
        stats.append(image_statistics(x))
    if not feats:
        dim = int(two_outputs.outputs[0].shape[-1])
        return Outputs(np.empty((0, dim), np.float32), np.empty((0, len(bias))),
                       np.empty((0, len(bias)), np.float32), np.empty((0, len(STATISTICS))))
    features = np.concatenate(feats)
    return Outputs(features, features.astype(np.float64) @ kernel + bias, np.concatenate(probs),
                   np.concatenate(stats))


def array_batches(images: np.ndarray, batch_size: int = 32):
    """Yield float32 batches of an ``(N, H, W, 3)`` array."""
    for i in range(0, len(images), batch_size):
        yield np.asarray(images[i:i + batch_size], dtype=np.float32)


def flip_views(images: np.ndarray) -> list[np.ndarray]:
    """The image and its horizontal, vertical and double flips (test-time augmentation)."""
    images = np.asarray(images)
    return [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]


def view_outputs(model, batches, *, views: int = 1, two_outputs=None) -> list[Outputs]:
    """:func:`compute_outputs` of each of the first ``views`` flips (1: the image itself; 4:
    also its horizontal, vertical and double flips), reading ``batches`` once."""
    if views not in (1, 4):
        raise ValueError(f"views must be 1 or 4, got {views}")
    two_outputs = two_outputs or two_output_model(model)
    collected = [[] for _ in range(views)]
    for batch in batches:
        x = np.asarray(batch[0] if isinstance(batch, tuple) else batch, dtype=np.float32)
        for k, view in enumerate(flip_views(x)[:views]):
            collected[k].append(compute_outputs(model, [np.ascontiguousarray(view)],
                                                two_outputs=two_outputs))
    return [Outputs.concat(parts) if parts else compute_outputs(model, [], two_outputs=two_outputs)
            for parts in collected]


def table_outputs(model, table: pd.DataFrame, classes, image_size, *, views: int = 1,
                  batch_size: int = 32, two_outputs=None) -> list[Outputs]:
    """:func:`view_outputs` for the images of a sample table, read as training read them."""
    from helpers import images

    ds = images.make_dataset(table, classes, image_size, batch_size=batch_size, training=False,
                             cache=False)
    return view_outputs(model, ds, views=views, two_outputs=two_outputs)


def mc_dropout(model, features, *, passes: int = 30, seed: int = 0) -> np.ndarray:
    """MC dropout of the head (Gal and Ghahramani, ICML 2016): the mean softmax over
    ``passes`` random dropout masks on the pooled features, the dropout layer's own rate.

    The backbone runs once (its features are given); only the cheap head is repeated. Shape
    ``(passes, N, classes)``.
    """
    try:
        rate = float(model.get_layer("dropout").rate)
    except ValueError as err:
        raise ValueError(f"model {model.name!r} has no 'dropout' layer for MC dropout") from err
    kernel, bias = head_weights(model)
    rng = np.random.default_rng(seed)
    f = np.asarray(features, dtype=np.float64)
    out = []
    for _ in range(passes):
        keep = rng.random(f.shape) >= rate
        logits = (f * keep / (1 - rate)) @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(out)


# --- scores ---------------------------------------------------------------------------------

def energy_score(logits) -> np.ndarray:
    """``logsumexp(logits)``: the negative free energy; higher = more in-distribution."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]


def msp_score(probs) -> np.ndarray:
    """The top softmax probability; higher = more in-distribution (the naive baseline)."""
    return np.asarray(probs, dtype=float).max(axis=1)


def _mahalanobis(x, means, precision) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``x`` to the nearest of ``means``."""
    x = np.asarray(x, dtype=np.float64)
    xp = x @ precision
    d = (np.sum(xp * x, axis=1)[:, None] - 2 * xp @ means.T
         + np.sum((means @ precision) * means, axis=1)[None, :])
    return np.maximum(d.min(axis=1), 0.0)


@dataclass
class Gate:
    """The two-part Mahalanobis gate (see the module docstring) and its thresholds.

    ``score(features, stats)`` returns an ``(N, 2)`` array (features distance, appearance
    distance); an image is accepted as a lesion photo when both are at most ``thresholds``.
    """

    means: np.ndarray
    precision: np.ndarray
    stats_mean: np.ndarray
    stats_precision: np.ndarray
    thresholds: np.ndarray
    recall: float
    val_scores: np.ndarray
    mean_classes: list[str]
    model_sha256: str = ""
    info: dict = field(default_factory=dict)

    def score(self, features, stats) -> np.ndarray:
        return np.stack([_mahalanobis(features, self.means, self.precision),
                         _mahalanobis(stats, self.stats_mean[None, :], self.stats_precision)],
                        axis=1)

    def combined(self, scores) -> np.ndarray:
        """One number per image: the larger of the two distances over its threshold
        (accepted when at most 1); what AUROCs of "the gate" are computed on."""
        return (np.asarray(scores, dtype=float) / self.thresholds[None, :]).max(axis=1)

    def accepts(self, features, stats) -> np.ndarray:
        return self.combined(self.score(features, stats)) <= 1.0

    def check(self, features, stats) -> list[dict]:
        """One JSON-ready verdict per row: accepted or not, each distance and its threshold."""
        scores = self.score(features, stats)
        out = []
        for row, combined in zip(scores, self.combined(scores)):
            accepted = bool(combined <= 1.0)
            out.append({"in_distribution": accepted, "score": round(float(combined), 4),
                        "method": "mahalanobis (model features and image appearance)",
                        "distances": {part: round(float(v), 3) for part, v in zip(PARTS, row)},
                        "thresholds": {part: round(float(t), 3)
                                       for part, t in zip(PARTS, self.thresholds)},
                        "validation_recall": self.recall,
                        "message": None if accepted else OOD_MESSAGE})
        return out

    # --- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path, *, measured: dict | None = None) -> Path:
        """Write ``ood.npz`` (arrays) and ``ood.json`` (settings and measured results)."""
        folder = Path(folder)
        np.savez(folder / GATE_FILE, means=self.means.astype(np.float32),
                 precision=self.precision.astype(np.float32),
                 stats_mean=self.stats_mean, stats_precision=self.stats_precision,
                 thresholds=np.asarray(self.thresholds, dtype=np.float64),
                 recall=np.float64(self.recall), val_scores=self.val_scores.astype(np.float64),
                 mean_classes=np.array(self.mean_classes))
        info = {**self.info, "method": "mahalanobis", "parts": list(PARTS),
                "thresholds": dict(zip(PARTS, map(float, self.thresholds))),
                "validation_recall": float(self.recall), "model_sha256": self.model_sha256,
                "mean_classes": list(self.mean_classes),
                "feature_dim": int(self.means.shape[1]), "statistics": list(STATISTICS),
                "chosen_on": "in-distribution validation images only"}
        if measured is not None:
            info["measured"] = measured
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=_jsonable) + "\n",
                                        encoding="utf-8")
        return folder / GATE_FILE

    @classmethod
    def load(cls, folder: str | Path) -> Gate:
        folder = Path(folder)
        info_path = folder / INFO_FILE
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        with np.load(folder / GATE_FILE) as data:
            return cls(means=data["means"].astype(np.float64),
                       precision=data["precision"].astype(np.float64),
                       stats_mean=data["stats_mean"], stats_precision=data["stats_precision"],
                       thresholds=data["thresholds"], recall=float(data["recall"]),
                       val_scores=data["val_scores"], mean_classes=list(data["mean_classes"]),
                       model_sha256=info.get("model_sha256", ""), info=info)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def joint_thresholds(val_scores, recall: float = DEFAULT_RECALL) -> np.ndarray:
    """Thresholds for every column of ``val_scores`` (``(N, parts)``) that together accept at
    least ``recall`` of the validation images.

    Both thresholds are the ``k``-th smallest value of their column, for the smallest ``k``
    (from ``ceil(recall * N)`` up) at which the images under *every* threshold are at least
    ``recall`` of all: each part gives up about the same share of validation images.
    """
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    scores = np.asarray(val_scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[:, None]
    n = len(scores)
    if n == 0:
        raise ValueError("no validation scores to set thresholds from")
    ordered = np.sort(scores, axis=0)
    for k in range(int(np.ceil(recall * n)), n + 1):
        thresholds = ordered[k - 1]
        if np.mean((scores <= thresholds).all(axis=1)) >= recall:
            return thresholds
    return ordered[-1]


def threshold_at_recall(val_scores, recall: float = DEFAULT_RECALL) -> float:
    """One score's threshold: the ``ceil(recall * N)``-th smallest validation value."""
    return float(joint_thresholds(np.asarray(val_scores, dtype=float)[:, None], recall)[0])


def fit_gate(train: Outputs, train_labels, classes, val: Outputs, *,
             recall: float = DEFAULT_RECALL, model_sha: str = "") -> Gate:
    """Fit the gate on the training split's outputs; set its thresholds on validation ones.

    ``train_labels`` are class indices. Features: one mean per class present in training and a
    shared covariance of the class-centred features; appearance: one mean and covariance of
    the image statistics. Both covariances use Ledoit-Wolf shrinkage.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(train.features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=int)
    present = [k for k in range(len(classes)) if (y == k).any()]
    if not present:
        raise ValueError("no training features to fit the gate on")
    means = np.stack([x[y == k].mean(axis=0) for k in present])
    centred = x - means[np.searchsorted(present, y)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    stats = np.asarray(train.stats, dtype=np.float64)
    stats_cov = LedoitWolf().fit(stats)
    gate = Gate(means=means, precision=precision, stats_mean=stats.mean(axis=0),
                stats_precision=stats_cov.precision_, thresholds=np.full(len(PARTS), np.inf),
                recall=recall, val_scores=np.empty((0, len(PARTS))),
                mean_classes=[classes[k] for k in present], model_sha256=model_sha,
                info={"n_train": int(len(y))})
    gate.val_scores = gate.score(val.features, val.stats)
    gate.thresholds = joint_thresholds(gate.val_scores, recall)
    gate.info["n_validation"] = int(len(gate.val_scores))
    return gate


def load_gate(model_path: str | Path) -> tuple[Gate | None, str | None]:
    """The gate saved beside a model file, or ``(None, reason)`` when there is none or it was
    fitted for another model (its recorded SHA-256 differs)."""
    model_path = Path(model_path)
    folder = model_path.parent
    if not (folder / GATE_FILE).exists():
        return None, (f"no out-of-distribution gate ({GATE_FILE}) beside {model_path.name}: run "
                      f"the chapter 'Before a model meets a patient' for this run")
    gate = Gate.load(folder)
    if gate.model_sha256 and model_path.suffix == ".keras" and \
            gate.model_sha256 != file_digest(model_path):
        return None, (f"the gate in {folder / GATE_FILE} was fitted for another version of "
                      f"{model_path.name}; rerun the chapter to refit it")
    return gate, None


# --- how well does it separate? --------------------------------------------------------------

def auroc(in_scores, out_scores, *, higher_is_in: bool = True) -> float:
    """The chance that a random in-distribution image looks more "in" than a random OOD one."""
    from helpers.metrics import binary_auc

    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    sign = 1.0 if higher_is_in else -1.0
    labels = np.r_[np.ones(len(in_scores), bool), np.zeros(len(out_scores), bool)]
    return binary_auc(labels, sign * np.r_[in_scores, out_scores])


def separation_table(scores: dict[str, np.ndarray], kinds: np.ndarray, *, inside: str,
                     higher_is_in: dict[str, bool]) -> pd.DataFrame:
    """AUROC of each score, in-distribution ``inside`` rows against each other kind and all.

    ``scores`` maps a score name to one value per row; ``kinds`` names each row's set.
    """
    kinds = np.asarray(kinds)
    others = [k for k in pd.unique(kinds) if k != inside]
    rows = {}
    for name, values in scores.items():
        values = np.asarray(values, float)
        row = {k: auroc(values[kinds == inside], values[kinds == k],
                        higher_is_in=higher_is_in[name]) for k in others}
        row["all out-of-distribution"] = auroc(values[kinds == inside], values[kinds != inside],
                                               higher_is_in=higher_is_in[name])
        rows[name] = row
    table = pd.DataFrame(rows).T
    table.index.name = "score"
    return table


def acceptance_table(accepted: np.ndarray, kinds: np.ndarray) -> pd.DataFrame:
    """Per set of images: how many, how many the gate accepted, and the share accepted."""
    frame = pd.DataFrame({"kind": kinds, "accepted": np.asarray(accepted, bool)})
    table = frame.groupby("kind", sort=False)["accepted"].agg(images="size", accepted="sum")
    table["share accepted"] = table["accepted"] / table["images"]
    return table


# --- the out-of-distribution test set -----------------------------------------------------

def _rgb(image) -> np.ndarray:
    from PIL import Image

    image = image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, image).convert("RGB"))


def everyday_photos(*, crops: bool = True) -> list[tuple[str, np.ndarray]]:
    """Photos shipped inside installed packages, as ``(name, uint8 RGB)`` pairs.

    scikit-learn's ``load_sample_images`` (a Chinese temple, a flower) and matplotlib's sample
    data (Grace Hopper's portrait, a product pack photo, the matplotlib logo). With ``crops``,
    each photo also gives four quarter crops and a centre crop: a phone photo of anything is
    often a close-up.
    """
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = []
    sample = load_sample_images()
    for name, image in zip(sample.filenames, sample.images):
        photos.append((f"scikit-learn {Path(name).name}", np.asarray(image, dtype=np.uint8)))
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with cbook.get_sample_data(name) as handle:
            image = Image.open(handle)
            image.load()
        photos.append((f"matplotlib {name}", _rgb(image)))
    if not crops:
        return photos
    out = []
    for name, rgb in photos:
        out.append((name, rgb))
        if name.endswith("logo2.png"):
            continue  # a logo's crops are flat colour
        h, w = rgb.shape[:2]
        for label, (r, c) in {"top left": (0, 0), "top right": (0, w // 2),
                              "bottom left": (h // 2, 0),
                              "bottom right": (h // 2, w // 2)}.items():
            out.append((f"{name}, {label} quarter", rgb[r:r + h // 2, c:c + w // 2]))
        out.append((f"{name}, centre", rgb[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]))
    return out


def synthetic_images(size: tuple[int, int] = (450, 600), *, seed: int = 0
                     ) -> list[tuple[str, str, np.ndarray]]:
    """Generated inputs a hostile or careless user might send: ``(kind, name, uint8 RGB)``.

    Kinds: ``noise`` (uniform, Gaussian and salt-and-pepper noise, coloured and grey),
    ``solid colour`` (red, green, blue, white, black, grey and a skin tone) and ``pattern``
    (a gradient, a checkerboard, stripes).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for i in range(3):
        out.append(("noise", f"uniform noise {i + 1}",
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    for i in range(2):
        out.append(("noise", f"Gaussian noise {i + 1}",
                    np.clip(rng.normal(128, 60, (h, w, 3)), 0, 255).astype(np.uint8)))
    grey = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    out.append(("noise", "grey uniform noise", np.repeat(grey, 3, axis=2)))
    salt = np.full((h, w, 3), 128, np.uint8)
    mask = rng.random((h, w))
    salt[mask < 0.1] = 0
    salt[mask > 0.9] = 255
    out.append(("noise", "salt-and-pepper noise", salt))
    for name, colour in {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255),
                         "white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128),
                         "skin tone": (224, 172, 138)}.items():
        out.append(("solid colour", f"solid {name}", np.full((h, w, 3), colour, np.uint8)))
    ramp = np.linspace(0, 255, w)[None, :, None]
    out.append(("pattern", "gradient", np.broadcast_to(
        np.concatenate([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], axis=2),
        (h, w, 3)).astype(np.uint8)))
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((yy // 40) + (xx // 40)) % 2 * 255).astype(np.uint8)
    out.append(("pattern", "checkerboard", np.repeat(checker[..., None], 3, axis=2)))
    stripes = ((xx // 25) % 2 * 200 + 30).astype(np.uint8)
    out.append(("pattern", "stripes", np.stack([stripes, stripes // 2, 255 - stripes], axis=2)))
    return out


def heavy_blur(rgb: np.ndarray, fraction: float = 0.08) -> np.ndarray:
    """A Gaussian blur whose radius is ``fraction`` of the image's longer side."""
    from PIL import Image, ImageFilter

    radius = max(1.0, fraction * max(rgb.shape[:2]))
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def plot_gate(scores: np.ndarray, kinds: np.ndarray, thresholds, *, title: str = ""):
    """Both distances of every image (log scales), one colour per set, and the thresholds:
    the accepted region is the lower-left rectangle."""
    import matplotlib.pyplot as plt

    scores = np.maximum(np.asarray(scores, float), 1e-3)
    kinds = np.asarray(kinds)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    markers = "o^sDvP*X"
    for i, kind in enumerate(pd.unique(kinds)):
        rows = scores[kinds == kind]
        ax.scatter(rows[:, 0], rows[:, 1], s=16, alpha=0.6, marker=markers[i % len(markers)],
                   label=f"{kind} ({len(rows)})")
    ax.axvline(thresholds[0], color="k", ls="--", lw=1)
    ax.axhline(thresholds[1], color="k", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", title=title,
           xlabel="features: distance to the nearest class (squared Mahalanobis)",
           ylabel="appearance: distance to lesion photos")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_gallery(images: list[np.ndarray], titles: list[str], *, columns: int = 6,
                 size: float = 1.9):
    """A grid of small images with titles."""
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 0.95),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig
