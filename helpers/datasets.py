"""Datasets registered once, each turned into the same *sample table*.

A sample table is a pandas DataFrame with one row per image and at least the columns
``image_id, path, label, group, dataset``. ``group`` is what must never cross a split (the
HAM10000 ``lesion_id``; for melanoma10k, the image's content hash). Everything downstream reads
this table, never a folder layout.

Where the data is looked for: an explicit ``root`` argument, then ``$SKINBOOK_DATA``, then
``data/`` in the repository (see :func:`helpers.config.data_root`).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from helpers import config
from helpers.download import Resource, fetch

HAM_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
"""HAM10000 diagnoses in the fixed order used for model outputs."""
HAM_CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
MALIGNANT_HAM: frozenset[str] = frozenset({"mel", "bcc", "akiec"})
"""HAM10000 diagnoses counted as malignant in the binary view."""
BINARY_CLASSES: tuple[str, ...] = ("benign", "malignant")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or incomplete; the message says where we looked and how to get it."""


# --- the registry ---------------------------------------------------------------------------

HAM10000_RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="HAM10000_metadata.csv",
        url="https://dataverse.harvard.edu/api/access/datafile/:persistentId"
        "?persistentId=doi:10.7910/DVN/DBW86T/4IZA8D&format=original",
        md5=None,
        size=None,
    ),
    Resource(
        name="HAM10000_images_part_1.zip",
        url="https://dataverse.harvard.edu/api/access/datafile/:persistentId"
        "?persistentId=doi:10.7910/DVN/DBW86T/IQZVUB",
        md5=None,
        size=None,
    ),
    Resource(
        name="HAM10000_images_part_2.zip",
        url="https://dataverse.harvard.edu/api/access/datafile/:persistentId"
        "?persistentId=doi:10.7910/DVN/DBW86T/UYG8NS",
        md5=None,
        size=None,
    ),
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the book knows about a dataset: how to cite it and how to get it."""

    name: str
    folder: str
    citation: str
    licence: str
    how_to_get: str
    resources: tuple[Resource, ...] = ()


REGISTRY: dict[str, DatasetInfo] = {
    "ham10000": DatasetInfo(
        name="HAM10000",
        folder="ham10000",
        citation=(
            "Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of "
            "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, "
            "180161 (2018). doi:10.7910/DVN/DBW86T"
        ),
        licence="CC BY-NC 4.0 (cite it; no commercial use)",
        how_to_get=(
            "run `python -m helpers.datasets download ham10000` (about 3 GB from Harvard "
            "Dataverse, resumable), or unpack the Dataverse zips or Kaggle's "
            "HAM10000_images_part_1/part_2 folders plus HAM10000_metadata.csv into {folder}"
        ),
        resources=HAM10000_RESOURCES,
    ),
    "melanoma10k": DatasetInfo(
        name="Melanoma Skin Cancer Dataset of 10000 Images",
        folder="melanoma10k",
        citation=(
            "Javid M. H. Melanoma Skin Cancer Dataset of 10000 Images. Kaggle (2022). "
            "kaggle.com/datasets/hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images"
        ),
        licence="CC0 1.0 as stated on Kaggle; the images come from the ISIC archive",
        how_to_get=(
            "download it with your Kaggle credentials (`kaggle datasets download -d "
            "hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images`, or the Download button "
            "on the dataset page) and unzip it so that {folder} holds train/benign, "
            "train/malignant (and optionally test/benign, test/malignant)"
        ),
    ),
}


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder where dataset ``name`` is expected (``<data root>/<folder>``)."""
    return config.data_root(root) / REGISTRY[name].folder


def _not_found(name: str, folder: Path, problem: str) -> DatasetNotFoundError:
    info = REGISTRY[name]
    return DatasetNotFoundError(
        f"{info.name}: {problem}\n"
        f"  Looked in: {folder}  (data root from the `root` argument, else ${config.DATA_ENV}, "
        f"else {config.REPO_ROOT / 'data'})\n"
        f"  To get it: {info.how_to_get.format(folder=folder)}."
    )


# --- HAM10000 -------------------------------------------------------------------------------

def download(name: str, root: str | Path | None = None) -> Path:
    """Download a registered dataset into the data root (resumable, hash-checked) and unpack it."""
    info = REGISTRY[name]
    if not info.resources:
        raise DatasetNotFoundError(
            f"{info.name} cannot be downloaded automatically: {info.how_to_get.format(folder=dataset_dir(name, root))}."
        )
    folder = dataset_dir(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    for resource in info.resources:
        path = fetch(resource, folder)
        if path.suffix == ".zip":
            _unzip_images(path, folder / "images")
    return folder


def _unzip_images(archive: Path, target: Path) -> None:
    """Extract the images of a Dataverse zip flat into ``target`` (skips those already there)."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if Path(m.filename).suffix.lower() in IMAGE_SUFFIXES]
        for member in tqdm(members, desc=f"unzip {archive.name}", unit="img", leave=False):
            out = target / Path(member.filename).name
            if not out.exists():
                out.write_bytes(zf.read(member))


def _find_ham_metadata(folder: Path) -> Path:
    for pattern in ("HAM10000_metadata.csv", "HAM10000_metadata*.csv", "HAM10000_metadata*.tab",
                    "HAM10000_metadata"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise _not_found("ham10000", folder, "no HAM10000_metadata.csv found.")


def _index_ham_images(folder: Path) -> dict[str, Path]:
    """Map image_id to file for every known local layout (flat, images/, Kaggle parts, zips)."""
    candidates = [folder, folder / "images", folder / "HAM10000_images",
                  folder / "HAM10000_images_part_1", folder / "HAM10000_images_part_2"]
    index: dict[str, Path] = {}
    for sub in candidates:
        if sub.is_dir():
            for path in sub.glob("ISIC_*"):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    index.setdefault(path.stem, path)
    if not index:
        zips = sorted(folder.glob("HAM10000_images_part_*.zip"))
        if zips:
            for archive in zips:
                _unzip_images(archive, folder / "images")
            return _index_ham_images(folder)
    return index


def load_ham10000(root: str | Path | None = None, *, allow_missing: bool = False) -> pd.DataFrame:
    """HAM10000 as a sample table, one row per image, classes in :data:`HAM_CLASSES` order.

    Accepts both metadata variants (Dataverse, with a ``dataset`` column; Kaggle, without).
    Images missing from disk raise :class:`DatasetNotFoundError` naming a few of them, unless
    ``allow_missing`` is set, in which case they are dropped with a warning.
    """
    folder = dataset_dir("ham10000", root)
    if not folder.is_dir():
        raise _not_found("ham10000", folder, "the folder does not exist.")
    meta_path = _find_ham_metadata(folder)
    sep = "\t" if meta_path.suffix == ".tab" else ","
    meta = pd.read_csv(meta_path, sep=sep)
    expected = {"lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"}
    lacking = expected - set(meta.columns)
    if lacking:
        raise _not_found("ham10000", folder, f"{meta_path.name} lacks columns {sorted(lacking)}.")
    unknown = set(meta["dx"]) - set(HAM_CLASSES)
    if unknown:
        raise ValueError(f"{meta_path} has unknown diagnoses {sorted(unknown)}")
    if "dataset" not in meta.columns:  # the Kaggle copy of the metadata
        meta["dataset"] = pd.NA
    index = _index_ham_images(folder)
    meta["path"] = meta["image_id"].map(lambda i: str(index[i]) if i in index else None)
    missing = meta.loc[meta["path"].isna(), "image_id"].tolist()
    if missing and (not allow_missing or len(missing) == len(meta)):
        raise _not_found(
            "ham10000", folder,
            f"{len(missing)} of {len(meta)} images listed in {meta_path.name} are missing "
            f"(e.g. {', '.join(missing[:3])}).",
        )
    if missing:
        import warnings
        warnings.warn(f"HAM10000: {len(missing)} images missing on disk were dropped "
                      f"(e.g. {', '.join(missing[:3])}).", stacklevel=2)
        meta = meta.dropna(subset=["path"])
    table = pd.DataFrame({
        "image_id": meta["image_id"],
        "path": meta["path"],
        "label": pd.Categorical(meta["dx"], categories=HAM_CLASSES),
        "group": meta["lesion_id"],
        "dataset": "ham10000",
        "lesion_id": meta["lesion_id"],
        "dx_type": meta["dx_type"],
        "age": meta["age"],
        "sex": meta["sex"],
        "localization": meta["localization"],
        "source": meta["dataset"],
    }).reset_index(drop=True)
    return table


def binary_view(table: pd.DataFrame) -> pd.DataFrame:
    """The HAM10000 table relabelled benign/malignant (malignant = mel, bcc, akiec).

    The seven-class label is kept in ``dx`` so the two views can always be compared.
    """
    out = table.copy()
    out["dx"] = out["label"].astype(str)
    out["label"] = pd.Categorical(
        ["malignant" if dx in MALIGNANT_HAM else "benign" for dx in out["dx"]],
        categories=BINARY_CLASSES,
    )
    return out


# --- melanoma10k ----------------------------------------------------------------------------

def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_melanoma10k(root: str | Path | None = None, *, splits: Iterable[str] = ("train", "test"),
                     deduplicate: bool = True) -> pd.DataFrame:
    """The Kaggle melanoma10k set as a sample table (``label`` benign/malignant).

    Reads ``train/`` and, when present, ``test/`` (column ``origin_split``). Exact duplicates are
    found by SHA-256 of the file: the ``group`` column is that hash, and with ``deduplicate`` only
    the first copy of each is kept (the count dropped is in ``table.attrs["duplicates_dropped"]``).
    """
    folder = dataset_dir("melanoma10k", root)
    rows = []
    for split in splits:
        for label in BINARY_CLASSES:
            sub = folder / split / label
            if not sub.is_dir():
                continue
            for path in sorted(sub.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append({"image_id": f"{split}_{path.stem}", "path": str(path),
                                 "label": label, "origin_split": split})
    if not rows:
        raise _not_found("melanoma10k", folder,
                         "no images found under train/benign, train/malignant (or test/...).")
    present = {(r["origin_split"], r["label"]) for r in rows}
    for split in {r["origin_split"] for r in rows}:
        for label in BINARY_CLASSES:
            if (split, label) not in present:
                raise _not_found("melanoma10k", folder, f"{split}/{label} is missing or empty.")
    table = pd.DataFrame(rows)
    table["group"] = [file_sha256(p) for p in tqdm(table["path"], desc="hash melanoma10k",
                                                   unit="img", leave=False)]
    table["dataset"] = "melanoma10k"
    table["label"] = pd.Categorical(table["label"], categories=BINARY_CLASSES)
    dropped = 0
    if deduplicate:
        before = len(table)
        table = table.drop_duplicates(subset="group", keep="first")
        dropped = before - len(table)
    table = table[["image_id", "path", "label", "group", "dataset", "origin_split"]]
    table = table.reset_index(drop=True)
    table.attrs["duplicates_dropped"] = dropped
    return table


def subsample(table: pd.DataFrame, max_images: int | None, seed: int = 42,
              min_per_class: int = 10) -> pd.DataFrame:
    """A class-stratified, group-respecting subsample of at most ``max_images`` rows.

    Every class keeps at least ``min_per_class`` images (or all it has) so that the smoke
    profile still sees rare classes. Whole groups are kept or dropped together.
    """
    if max_images is None or max_images >= len(table):
        return table
    counts = table["label"].value_counts()
    share = (counts / counts.sum() * max_images).round().astype(int).clip(lower=min_per_class)
    groups = (table.groupby("group", observed=True)
              .agg(label=("label", "first"), size=("label", "size"))
              .sample(frac=1.0, random_state=seed))
    keep: list[str] = []
    for label, quota in share.items():
        sizes = groups.loc[groups["label"] == label, "size"]
        keep += sizes.index[(sizes.cumsum() - sizes) < quota].tolist()
    return table[table["group"].isin(keep)].reset_index(drop=True)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.datasets",
                                     description="Find or download the book's datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download a dataset (resumable, hash-checked)")
    dl.add_argument("name", choices=sorted(REGISTRY))
    dl.add_argument("--root", default=None, help=f"data root (default: ${config.DATA_ENV} or data/)")
    check = sub.add_parser("check", help="say whether a dataset is found and how many images it has")
    check.add_argument("name", choices=sorted(REGISTRY))
    check.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(f"{REGISTRY[args.name].name} ready in {download(args.name, args.root)}")
        else:
            loader = load_ham10000 if args.name == "ham10000" else load_melanoma10k
            table = loader(args.root)
            print(f"{REGISTRY[args.name].name}: {len(table)} images")
            print(table["label"].value_counts().to_string())
    except DatasetNotFoundError as err:
        print(err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
