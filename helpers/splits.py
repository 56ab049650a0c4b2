"""Train / validation / test splits stratified by label and grouped by lesion.

HAM10000 holds about 2,500 repeat photos of the same lesion. A split at the image level puts
photos of one lesion on both sides and inflates every test metric; here the unit of splitting is
the ``group`` column of the sample table (``lesion_id``), and :func:`check_no_leak` asserts it.

A split is computed once, saved as CSV with its seed and the hash of the table it came from, and
checked every time it is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

PARTS: tuple[str, ...] = ("train", "val", "test")


class SplitLeakError(AssertionError):
    """A group (lesion) appears in more than one part of a split."""


def table_hash(table: pd.DataFrame) -> str:
    """A short, order-independent hash of a sample table's image ids, labels and groups."""
    key = table[["image_id", "label", "group"]].astype(str).sort_values("image_id")
    payload = "\n".join(",".join(row) for row in key.itertuples(index=False))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def grouped_split(table: pd.DataFrame, *, val_size: float = 0.15, test_size: float = 0.15,
                  seed: int = 42) -> pd.Series:
    """Assign each row to train/val/test, stratified by ``label`` and grouped by ``group``.

    Uses ``StratifiedGroupKFold``: the test part is one fold of ``round(1 / test_size)``, the
    validation part one fold of the remainder. Returns a Series of part names aligned with
    ``table``. Sizes are approximate because whole groups move together.
    """
    if not 0 < val_size < 1 or not 0 < test_size < 1 or val_size + test_size >= 1:
        raise ValueError(f"val_size and test_size must be in (0, 1) with a sum below 1, "
                         f"got {val_size} and {test_size}")
    labels = table["label"].astype(str).to_numpy()
    groups = table["group"].astype(str).to_numpy()
    part = np.full(len(table), "train", dtype=object)

    test_idx = _one_fold(labels, groups, round(1 / test_size), seed)
    part[test_idx] = "test"
    rest = np.flatnonzero(part == "train")
    val_share = val_size / (1 - test_size)
    val_idx = rest[_one_fold(labels[rest], groups[rest], round(1 / val_share), seed + 1)]
    part[val_idx] = "val"
    split = pd.Series(part, index=table.index, name="split")
    check_no_leak(table.assign(split=split))
    return split


def _one_fold(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    n_splits = max(2, min(n_splits, len(np.unique(groups))))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, fold = next(folds.split(np.zeros(len(labels)), labels, groups))
    return fold


def check_no_leak(table: pd.DataFrame) -> None:
    """Raise :class:`SplitLeakError` if any group sits in more than one split part."""
    parts_per_group = table.groupby("group", observed=True)["split"].nunique()
    leaking = parts_per_group[parts_per_group > 1]
    if len(leaking):
        raise SplitLeakError(
            f"{len(leaking)} groups (lesions) appear in more than one split part, "
            f"e.g. {', '.join(map(str, leaking.index[:3]))}"
        )


def load_or_create_split(table: pd.DataFrame, path: str | Path, *, seed: int = 42,
                         val_size: float = 0.15, test_size: float = 0.15) -> pd.DataFrame:
    """The sample table with a ``split`` column, read from ``path`` or computed and saved there.

    A saved split is reused only if it was made from the same table (same hash) and seed, and it
    is checked for leaks every time. A stale file is replaced, with a message saying why.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    digest = table_hash(table)
    settings = {"table_hash": digest, "seed": seed, "val_size": val_size,
                "test_size": test_size, "n_images": len(table)}
    if path.exists() and meta_path.exists():
        saved = json.loads(meta_path.read_text())
        if saved == settings:
            split = pd.read_csv(path, dtype=str).set_index("image_id")["split"]
            out = table.assign(split=table["image_id"].map(split))
            if out["split"].isna().any() or not set(out["split"]) <= set(PARTS):
                raise ValueError(f"{path} does not cover every image of the table; delete it.")
            check_no_leak(out)
            return out
        print(f"Saved split {path.name} was made from a different table or settings; "
              f"recomputing it.")
    out = table.assign(split=grouped_split(table, val_size=val_size, test_size=test_size,
                                           seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    out[["image_id", "split"]].to_csv(path, index=False)
    meta_path.write_text(json.dumps(settings, indent=2))
    return out


def random_image_split(table: pd.DataFrame, *, val_size: float = 0.15, test_size: float = 0.15,
                       seed: int = 42) -> pd.Series:
    """The *wrong* split, for teaching: stratified by label but ignoring lesions (it leaks)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(table))
    labels = table["label"].astype(str).to_numpy()
    train_val, test = train_test_split(idx, test_size=test_size, stratify=labels,
                                       random_state=seed)
    train, val = train_test_split(train_val, test_size=val_size / (1 - test_size),
                                  stratify=labels[train_val], random_state=seed)
    part = np.empty(len(table), dtype=object)
    part[train], part[val], part[test] = "train", "val", "test"
    return pd.Series(part, index=table.index, name="split")


def leak_report(table: pd.DataFrame) -> pd.DataFrame:
    """Per split part: images, and how many of them share a lesion with the training part."""
    train_groups = set(table.loc[table["split"] == "train", "group"])
    rows = []
    for part in PARTS:
        sub = table[table["split"] == part]
        shared = sub["group"].isin(train_groups).sum() if part != "train" else 0
        rows.append({"part": part, "images": len(sub), "lesions": sub["group"].nunique(),
                     "images whose lesion is also in train": int(shared)})
    return pd.DataFrame(rows).set_index("part")
