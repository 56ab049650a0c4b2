"""The patient's metadata as model inputs: age, sex and body site, with missing values flagged.

HAM10000 records the patient's age, sex and the lesion's anatomical site for almost every
image. :func:`encode` turns them into a fixed-length vector (the vocabulary is fixed here, not
learned from a split, so every split and every user's table encode the same way):

* age / 100, and a flag for a missing age (the age is then 0);
* sex one-hot (male, female), all zero and flagged when unknown;
* site one-hot over HAM10000's 14 sites, all zero and flagged when unknown.

:func:`fused_head` is the model chapter 09 shows: the image model's pooled features and this
vector, concatenated, then dropout and a softmax layer. :func:`helpers.heads.fit_head` trains it on cached
features with class weights and early stopping on validation balanced accuracy, the same rule
as the image-only control (:func:`helpers.heads.image_head`). ``dx_type`` (how the diagnosis was confirmed) and the source
collection are never inputs: they leak the label and the clinic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEXES = ("male", "female")
SITES = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
         "lower extremity", "neck", "scalp", "trunk", "upper extremity")
"""HAM10000's anatomical sites (``localization``), ``unknown`` excluded."""
COLUMNS = ("age", "sex", "localization")
"""The table columns :func:`encode` reads."""


def feature_names() -> list[str]:
    """Names of the :func:`encode` columns, in order."""
    return (["age / 100", "age missing"] + [f"sex {s}" for s in SEXES] + ["sex missing"]
            + [f"site {s}" for s in SITES] + ["site missing"])


def encode(table: pd.DataFrame) -> np.ndarray:
    """``(N, 20)`` float32: the metadata of every row of ``table`` (see the module docstring).

    Missing or unknown values (NaN, ``"unknown"``, an unseen site) set their flag; an age
    outside 0-120 raises ``ValueError`` naming the first bad row.
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the metadata columns {missing}; HAM10000's "
                         f"metadata CSV has {list(COLUMNS)}")
    age = pd.to_numeric(table["age"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isfinite(age) & ((age < 0) | (age > 120)))
    if len(bad):
        raise ValueError(f"age must be between 0 and 120 years; row {int(bad[0])} has "
                         f"{age[bad[0]]:g}")
    age_missing = ~np.isfinite(age)
    sex = table["sex"].astype(str).str.lower().to_numpy()
    site = table["localization"].astype(str).str.lower().to_numpy()
    sex_onehot = np.stack([sex == s for s in SEXES], axis=1)
    site_onehot = np.stack([site == s for s in SITES], axis=1)
    out = np.column_stack([
        np.where(age_missing, 0.0, age / 100.0), age_missing,
        sex_onehot, ~sex_onehot.any(axis=1),
        site_onehot, ~site_onehot.any(axis=1)])
    return out.astype(np.float32)


def fused_head(feature_dim: int, n_classes: int, *, meta_dim: int = len(feature_names()),
               dropout: float = 0.3, seed: int = 42):
    """Image features and metadata, concatenated, then dropout and a softmax ``Dense``."""
    import keras

    features = keras.Input((feature_dim,), name="image_features")
    meta = keras.Input((meta_dim,), name="metadata")
    x = keras.layers.Concatenate(name="fused")([features, meta])
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model([features, meta], outputs, name="image_and_metadata_head")
