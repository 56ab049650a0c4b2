"""Groups that are lesions: the unit a split must never cut.

A split is honest only if every photo of one lesion lands on the same side. The metadata's
``lesion_id`` is not enough:

- **HAM10000** lists a few photographs under two lesion ids (e.g. ISIC_0030074 / ISIC_0025226):
  the same picture, two groups.
- **melanoma10k** has no lesion ids at all, and its malignant folder holds resized copies of all
  1,113 HAM10000 melanomas, which come from about 600 lesions with several photos each.

So groups are rebuilt from the pictures (the thumbnail signatures of :mod:`helpers.crossdata`):
images whose signatures are closer than the duplicate threshold are joined (union-find), and a
melanoma10k copy of a HAM10000 image joins that image's HAM10000 lesion. A group is then a
lesion *or* a duplicate cluster, and :func:`helpers.splits.grouped_split` keeps it whole.

Every merge is recorded (``table.attrs["group_merges"]``) so chapter 02 can show what changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import crossdata


class _UnionFind:
    """Disjoint sets over hashable keys; each set's name is its smallest member."""

    def __init__(self, keys: Iterable):
        self.parent = {k: k for k in keys}

    def find(self, key):
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a, b) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        lo, hi = sorted((ra, rb))
        self.parent[hi] = lo
        return True


def close_pairs(signs: np.ndarray, threshold: float, *, chunk: int = 1024) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of signatures closer than ``threshold`` (all pairs)."""
    min_cos = 1.0 - threshold ** 2 / 2.0  # distance = sqrt(2 - 2 cos)
    found = []
    for start in range(0, len(signs), chunk):
        sims = signs[start:start + chunk] @ signs.T
        rows, cols = np.nonzero(sims > min_cos)
        rows = rows + start
        keep = rows < cols
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _signatures(table: pd.DataFrame, cache: Path | None, progress: bool) -> np.ndarray:
    return crossdata.signatures(crossdata.thumbnails(table, cache, progress=progress))


def merge_duplicates(table: pd.DataFrame, *, threshold: float = crossdata.DEFAULT_THRESHOLD,
                     cache: str | Path | None = None, progress: bool = False,
                     reference: pd.DataFrame | None = None,
                     reference_cache: str | Path | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``table`` with its ``group`` column rebuilt so that duplicate photos share one group.

    - Two images of ``table`` closer than ``threshold`` join one group.
    - With ``reference`` (HAM10000, already merged), an image of ``table`` whose nearest
      reference image is closer than ``threshold`` joins that image's reference group, so a
      melanoma10k copy takes its HAM10000 lesion id.

    Returns the new table and the pairs of images that joined two groups (image_id,
    other_image_id, distance, rule). The old group is kept in ``group_before``;
    ``table.attrs["group_merges"]`` counts the groups before and after and the joins per rule.
    """
    out = table.reset_index(drop=True).copy()
    old = out["group"].astype(str).to_numpy()
    signs = _signatures(out, Path(cache) if cache else None, progress)
    nodes = _UnionFind(dict.fromkeys(old))
    pairs = []
    for i, j in close_pairs(signs, threshold):
        if nodes.union(old[i], old[j]):
            pairs.append((out.at[i, "image_id"], out.at[j, "image_id"],
                          float(crossdata.distance(signs[i], signs[j])), "duplicate photo"))
    within = len(pairs)
    copies = 0
    if reference is not None and len(reference):
        ref = reference.reset_index(drop=True)
        ref_groups = ref["group"].astype(str).to_numpy()
        index, dist = crossdata.nearest(signs, _signatures(
            ref, Path(reference_cache) if reference_cache else None, progress))
        copy = dist < threshold
        copies = int(copy.sum())
        for g in dict.fromkeys(ref_groups[index[copy]]):
            nodes.parent.setdefault(g, g)
        for i in np.flatnonzero(copy):
            target = ref_groups[index[i]]
            if nodes.union(old[i], target):
                pairs.append((out.at[i, "image_id"], ref.at[int(index[i]), "image_id"],
                              float(dist[i]), "copy of a reference image"))
    new = np.array([nodes.find(g) for g in old], dtype=object)
    # A cluster that holds a reference lesion is named by it (e.g. HAM10000's lesion id).
    if reference is not None and len(reference):
        ref_set = set(reference["group"].astype(str))
        members: dict[str, list[str]] = {}
        for g in nodes.parent:
            members.setdefault(nodes.find(g), []).append(g)
        rename = {root: min((g for g in gs if g in ref_set), default=root)
                  for root, gs in members.items()}
        new = np.array([rename[g] for g in new], dtype=object)
    out["group_before"] = old
    out["group"] = new
    out.attrs = dict(table.attrs)
    out.attrs["group_merges"] = {
        "threshold": threshold,
        "groups_before": int(len(set(old))),
        "groups_after": int(len(set(new))),
        "joined_as_duplicate_photos": within,
        "copies_of_reference_images": copies,
        "joined_to_reference_lesions": len(pairs) - within,
    }
    return out, pd.DataFrame(pairs, columns=["image_id", "other_image_id", "distance", "rule"])


def merge_summary(table: pd.DataFrame) -> pd.Series:
    """The counts of ``table.attrs["group_merges"]`` as a Series (for a chapter to display)."""
    merges = table.attrs.get("group_merges")
    if merges is None:
        raise ValueError("this table's groups were not rebuilt by helpers.lesions.merge_duplicates")
    return pd.Series(merges, name="lesion groups", dtype=object)
