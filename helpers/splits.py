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
import os
from pathlib import Path

import numpy as np
import pandas as pd

PARTS: tuple[str, ...] = ("train", "val", "test")
SPLIT_METHOD = "grouped-stratified-v3-lesion-clusters"
"""Recorded with every saved split: a saved split made by another method is recomputed."""


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

    Each group (lesion) is labelled with its most common label. Within each label, the groups are
    shuffled with ``seed``, ordered largest first, and each is given to the part that is
    furthest (relatively) from its target number of images. So every label is split close to
    ``1 - val_size - test_size`` / ``val_size`` / ``test_size`` (a label with at least three
    groups reaches all three parts), whole groups move together, and no group is ever in two
    parts (checked before returning). Returns a Series of part names aligned with ``table``.
    """
    if not 0 < val_size < 1 or not 0 < test_size < 1 or val_size + test_size >= 1:
        raise ValueError(f"val_size and test_size must be in (0, 1) with a sum below 1, "
                         f"got {val_size} and {test_size}")
    if table["group"].isna().any():
        raise ValueError("the table has rows without a group; every image needs one")
    shares = np.array([1 - val_size - test_size, val_size, test_size])
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame({"group": table["group"].astype(str).to_numpy(),
                         "label": table["label"].astype(str).to_numpy()})
    per_label = keys.value_counts(sort=False).rename("n").reset_index()
    majority = (per_label.sort_values(["group", "n", "label"], ascending=[True, False, True])
                .drop_duplicates("group").set_index("group")["label"])
    groups = pd.DataFrame({"size": keys.groupby("group").size(), "label": majority})
    assigned: dict[str, str] = {}
    for _, members in groups.groupby("label", sort=True):
        members = members.iloc[rng.permutation(len(members))]
        members = members.sort_values("size", ascending=False, kind="stable")
        targets = shares * members["size"].sum()
        filled = np.zeros(3)
        for group, size in zip(members.index, members["size"]):
            part = int(np.argmax((targets - filled) / targets))
            filled[part] += size
            assigned[group] = PARTS[part]
    split = pd.Series(table["group"].astype(str).map(assigned).to_numpy(), index=table.index,
                      name="split")
    check_no_leak(table.assign(split=split))
    return split


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
                         val_size: float = 0.15, test_size: float = 0.15,
                         notes: dict | None = None) -> pd.DataFrame:
    """The sample table with a ``split`` column, read from ``path`` or computed and saved there.

    A saved split is reused only if it was made from the same table (same hash) and seed, and it
    is checked for leaks every time. A stale file is replaced, with a message saying why.
    ``notes`` (e.g. how many lesion groups were merged, and why) are saved beside the settings.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    digest = table_hash(table)
    settings = {"table_hash": digest, "seed": seed, "val_size": val_size,
                "test_size": test_size, "n_images": len(table), "method": SPLIT_METHOD}
    if path.exists() and meta_path.exists():
        saved = json.loads(meta_path.read_text())
        saved.pop("notes", None)
        if saved == settings:
            saved_split = pd.read_csv(path, dtype=str)
            if saved_split["image_id"].duplicated().any():
                raise ValueError(f"{path} lists an image more than once; delete it.")
            split = saved_split.set_index("image_id")["split"]
            out = table.assign(split=table["image_id"].map(split))
            if out["split"].isna().any() or not set(out["split"]) <= set(PARTS):
                raise ValueError(f"{path} does not cover every image of the table; delete it.")
            check_no_leak(out)
            return out
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        print(f"Saved split {path.name} was made with a different {', '.join(changed)}; "
              f"recomputing it.")
    out = table.assign(split=grouped_split(table, val_size=val_size, test_size=test_size,
                                           seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out[["image_id", "split"]].to_csv(tmp, index=False)
    os.replace(tmp, path)  # never leave a half-written split behind
    meta_path.write_text(json.dumps({**settings, "notes": notes or {}}, indent=2))
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
