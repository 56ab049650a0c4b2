"""Does the model work equally well for everyone it would meet? Metrics per patient subgroup.

HAM10000's metadata gives each image the patient's age and sex, the anatomical site and the
collection it came from (``source``: Vienna's modern and MoleMax archives, the Rosendahl
practice in Queensland, the older ViDIR images). :func:`subgroup_table` scores a model's test
predictions within each group, with lesion-grouped bootstrap intervals (the bootstrap of
:func:`helpers.metrics.bootstrap`), and writes "too few to tell" instead of a number for a group
too small to say anything.

What the data cannot show: HAM10000 has no skin-type (Fitzpatrick) labels and its patients are
mostly light-skinned (Austria and Australia), so no table here can say how the model does on
dark skin. Educational tool only: a subgroup table is not a clinical validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers import metrics

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 30, "under 30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"),
    (75, 200, "75 and over"))
"""Age bands (lower bound inclusive, upper exclusive)."""
COLUMNS: dict[str, str] = {"age band": "age_band", "sex": "sex", "anatomical site": "localization",
                           "source collection": "source"}
"""Subgroup name shown -> column of the sample table (``age_band``: :func:`add_age_band`)."""
TOO_FEW = "too few to tell"


def age_band(age) -> str:
    """The band of one age in years (``unknown`` for a missing age)."""
    if age is None or pd.isna(age):
        return "unknown"
    for low, high, name in AGE_BANDS:
        if low <= float(age) < high:
            return name
    return "unknown"


def add_age_band(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with an ``age_band`` column (ordered, ``unknown`` last)."""
    order = [name for _, _, name in AGE_BANDS] + ["unknown"]
    out = table.copy()
    out["age_band"] = pd.Categorical(out["age"].map(age_band), categories=order, ordered=True)
    return out


def mel_sensitivity(mel: int):
    """``f(y_true, proba)``: the share of melanomas predicted as melanoma (NaN without any)."""
    def metric(y_true, proba):
        positive = np.asarray(y_true) == mel
        if not positive.any():
            return float("nan")
        return float((np.asarray(proba)[positive].argmax(1) == mel).mean())
    return metric


def subgroup_table(table: pd.DataFrame, y_true, proba, classes: Sequence[str], column: str, *,
                   min_images: int = 30, min_melanomas: int = 10, rounds: int = 1000,
                   seed: int = 42, groups_column: str = "group") -> pd.DataFrame:
    """Balanced accuracy and melanoma sensitivity in each value of ``table[column]``.

    ``table`` holds the scored images in the row order of ``y_true``/``proba`` with their
    metadata and lesion ``group``. A group with fewer than ``min_images`` images gets
    "too few to tell" for balanced accuracy, one with fewer than ``min_melanomas`` melanomas
    for melanoma sensitivity. Intervals are lesion-grouped bootstrap 95% intervals.
    """
    y_true, proba = metrics._check(y_true, proba)
    if len(table) != len(y_true):
        raise ValueError(f"table has {len(table)} rows for {len(y_true)} predictions")
    mel = list(classes).index("mel") if "mel" in classes else None
    values = table[column]
    values = values.astype(object).where(values.notna(), "unknown")
    order = (list(table[column].cat.categories) if isinstance(table[column].dtype,
                                                              pd.CategoricalDtype)
             else sorted(values.unique(), key=lambda v: (v == "unknown", str(v))))
    rows = []
    for value in order:
        mask = (values == value).to_numpy()
        if not mask.any():
            continue
        y, p = y_true[mask], proba[mask]
        lesions = table.loc[mask, groups_column].to_numpy()
        n_mel = int((y == mel).sum()) if mel is not None else 0
        row = {column: value, "images": int(mask.sum()), "lesions": int(len(set(lesions))),
               "melanomas": n_mel, "classes present": int(len(np.unique(y)))}
        for name, short, metric, enough in (
                ("balanced accuracy", "bal. acc.", metrics.balanced_accuracy,
                 mask.sum() >= min_images),
                ("melanoma sensitivity", "mel. sens.", mel_sensitivity(mel),
                 mel is not None and n_mel >= min_melanomas)):
            ci = (metrics.bootstrap(metric, y, p, rounds=rounds, seed=seed, groups=lesions)
                  if enough else {"estimate": np.nan, "low": np.nan, "high": np.nan})
            row.update({name: ci["estimate"], f"{short} low": ci["low"],
                        f"{short} high": ci["high"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index(column)


def readable(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The table with "0.71 (0.62-0.80)" cells, or "too few to tell" where nothing is shown."""
    def cell(row, name, low, high):
        if pd.isna(row[name]):
            return TOO_FEW
        if pd.isna(row[low]):
            return f"{row[name]:.{digits}f}"
        return f"{row[name]:.{digits}f} ({row[low]:.{digits}f}-{row[high]:.{digits}f})"

    out = table[["images", "lesions", "melanomas"]].copy()
    out["balanced accuracy (95% CI)"] = [cell(r, "balanced accuracy", "bal. acc. low",
                                              "bal. acc. high") for _, r in table.iterrows()]
    out["melanoma sensitivity (95% CI)"] = [cell(r, "melanoma sensitivity", "mel. sens. low",
                                                 "mel. sens. high") for _, r in table.iterrows()]
    return out


def all_subgroups(table: pd.DataFrame, y_true, proba, classes: Sequence[str], **kwargs
                  ) -> pd.DataFrame:
    """:func:`subgroup_table` for every column of :data:`COLUMNS`, stacked (subgroup, value)."""
    table = add_age_band(table) if "age_band" not in table else table
    parts = {}
    for name, column in COLUMNS.items():
        if column not in table or table[column].isna().all():
            continue
        part = subgroup_table(table, y_true, proba, classes, column, **kwargs)
        part.index = part.index.astype(str)
        part.index.name = "value"
        parts[name] = part
    return pd.concat(parts, names=["subgroup", "value"])
