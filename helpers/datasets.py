"""Datasets registered once, each turned into the same *sample table*.

A sample table is a pandas DataFrame with one row per image and at least the columns
``image_id, path, label, group, dataset``. ``group`` is what must never cross a split (the
HAM10000 ``lesion_id``; for melanoma10k, the image's content hash). Everything downstream reads
this table, never a folder layout.

Where the data is looked for: an explicit ``root`` argument, then ``$SKINBOOK_DATA``, then
``data/`` in the repository (see :func:`helpers.config.data_root`).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm.auto import tqdm

from helpers import config
from helpers.download import DownloadError, Resource, fetch, file_digest

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

_DATAVERSE = "https://dataverse.harvard.edu/api/access/datafile/{}"
# HAM10000 on Harvard Dataverse, doi:10.7910/DVN/DBW86T (version 4.0). File ids, sizes and the MD5s
# that Dataverse publishes for each file, as recorded in public code, e.g. the `_SOURCE_FILES`
# table of sit-start/core, python/sitstart/ml/data/datasets/ham10k.py (all three MD5s); the same
# ids, MD5s and byte sizes appear independently in several other public HAM10000 download
# scripts and data cards. The metadata is an "ingested" tabular file: Dataverse serves a
# re-exported TSV by default, so `format=original` is needed for the published MD5 to apply.
# These were not re-checked against a live download here (no internet): see data/README.md.
#
# The lesion masks chapter 06 checks explanations against (Tschandl et al., Nat. Med. 26, 1229,
# 2020, doi:10.1038/s41591-020-0942-0): one `<image_id>_segmentation.png` per image, in a folder
# `HAM10000_segmentations_lesion_tschandl/` of the zip (plus macOS `__MACOSX/._*` stubs, which are
# skipped). Dataverse file id 3838943, 10,808,743 bytes, MD5 6e8d252e09cfdb0189199f15985a5b84, as
# recorded in public code that downloads it from Dataverse: id and size in
# aniketmeena12/medxai, scripts/download_data_official.sh (with the MD5, "matches the value
# Dataverse publishes", in its data/raw/ham10000-masks/SOURCE.md); size and MD5 read from the
# Dataverse dataset API in Rajrup910/Backend-S4D, scripts/download_pad_ufes.py; id and MD5 in
# other download scripts too. Not re-checked against a live download here (no internet).
HAM10000_MASKS = Resource(
    name="HAM10000_segmentations_lesion_tschandl.zip",
    url=_DATAVERSE.format(3838943),
    md5="6e8d252e09cfdb0189199f15985a5b84",
    size=10_808_743,
)
HAM10000_RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="HAM10000_metadata.csv",
        url=_DATAVERSE.format(4338392) + "?format=original",
        md5="8f85fb1aa29d80a2797247e434deb79d",
        size=690_218,
    ),
    Resource(
        name="HAM10000_images_part_1.zip",
        url=_DATAVERSE.format(3172585),
        md5="4639bfa73ab251610530a97c898e6e46",
        size=1_366_522_108,
    ),
    Resource(
        name="HAM10000_images_part_2.zip",
        url=_DATAVERSE.format(3172584),
        md5="da43d6cc50f6613013be07e8986b384b",
        size=1_403_566_547,
    ),
    HAM10000_MASKS,
)
UNPACK_INTO: dict[str, str] = {HAM10000_MASKS.name: "masks"}
"""The sub-folder of the dataset folder a downloaded zip is unpacked into (default ``images``)."""


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
            "180161 (2018). doi:10.1038/sdata.2018.161; data: Harvard Dataverse, "
            "doi:10.7910/DVN/DBW86T"
        ),
        licence="CC BY-NC 4.0 (cite it; no commercial use)",
        how_to_get=(
            "run `python -m helpers.datasets download ham10000` (about 2.8 GB from Harvard "
            "Dataverse with the lesion masks, resumable, MD5-checked), or put HAM10000_metadata.csv plus the images "
            "into {folder}: the two Dataverse zips as they are, Kaggle's "
            "HAM10000_images_part_1/ and HAM10000_images_part_2/ folders, an images/ folder, or "
            "the .jpg files directly in the folder (see data/README.md)"
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
            "download it with your own Kaggle credentials (~/.kaggle/kaggle.json, then `kaggle "
            "datasets download -d hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images "
            "-p {folder} --unzip`, or the Download button on the dataset page) so that {folder} "
            "holds train/benign and train/malignant (and optionally test/benign, test/malignant)"
        ),
    ),
}


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder where dataset ``name`` is expected (``<data root>/<folder>``)."""
    return config.data_root(root) / REGISTRY[name].folder


def _root_origin(root: str | Path | None) -> str:
    if root is not None:
        return "the `root` argument"
    if os.environ.get(config.DATA_ENV):
        return f"${config.DATA_ENV}"
    return f"the default, as neither a `root` argument nor ${config.DATA_ENV} was given"


def _not_found(name: str, folder: Path, problem: str,
               root: str | Path | None = None) -> DatasetNotFoundError:
    info = REGISTRY[name]
    return DatasetNotFoundError(
        f"{info.name}: {problem}\n"
        f"  Looked in: {folder}\n"
        f"  Data root: {folder.parent} (from {_root_origin(root)}). The data root is taken from "
        f"a `root` argument, else ${config.DATA_ENV}, else {config.REPO_ROOT / 'data'}.\n"
        f"  To get it: {info.how_to_get.format(folder=folder)}."
    )


# --- HAM10000 -------------------------------------------------------------------------------

def download(name: str, root: str | Path | None = None, *, progress: bool = True,
             only: Iterable[str] = ()) -> Path:
    """Download a registered dataset into the data root (resumable, hash-checked) and unpack it.

    Zips are unpacked into the dataset folder's ``images/`` (the lesion masks into ``masks/``,
    see :data:`UNPACK_INTO`). A zip that was unpacked completely leaves a marker
    (``.<zip name>.unpacked``), so the zip itself may be deleted afterwards without the next call
    downloading it again. ``only``: names of registered files to fetch, the others are left
    alone (e.g. just the masks, for a copy of the images you already have).
    """
    info = REGISTRY[name]
    folder = dataset_dir(name, root)
    if not info.resources:
        raise DatasetNotFoundError(
            f"{info.name} cannot be downloaded automatically: "
            f"{info.how_to_get.format(folder=folder)}."
        )
    only = set(only)
    unknown = only - {r.name for r in info.resources}
    if unknown:
        raise ValueError(f"{info.name} has no registered file {', '.join(sorted(unknown))}; its "
                         f"files are {', '.join(r.name for r in info.resources)}")
    folder.mkdir(parents=True, exist_ok=True)
    for resource in info.resources:
        if only and resource.name not in only:
            continue
        marker = folder / f".{resource.name}.unpacked"
        stamp = resource.sha256 or resource.md5 or resource.url
        if marker.exists() and marker.read_text().strip() == stamp:
            continue
        path = fetch(resource, folder, progress=progress)
        if path.suffix == ".zip":
            _unzip_images(path, folder / UNPACK_INTO.get(resource.name, "images"),
                          progress=progress)
            marker.write_text(stamp + "\n")
    return folder


def _unzip_images(archive: Path, target: Path, *, progress: bool = True) -> int:
    """Extract the images (or masks) of a zip flat into ``target``; returns how many it holds.

    Images already there are skipped; each file is written under a temporary name and renamed,
    so an interrupted extraction never leaves a truncated image behind.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if _is_image_member(m.filename)]
            for member in tqdm(members, desc=f"unzip {archive.name}", unit="img", leave=False,
                               disable=not progress):
                out = target / PurePosixPath(member.filename).name
                if out.exists():
                    continue
                tmp = out.with_name(out.name + ".tmp")
                tmp.write_bytes(zf.read(member))
                os.replace(tmp, out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise DatasetNotFoundError(
            f"{archive} could not be unpacked ({type(err).__name__}: {err}). It is probably "
            f"incomplete or damaged: delete it and download it again."
        ) from err
    return len(members)


def _is_image_member(filename: str) -> bool:
    path = PurePosixPath(filename)
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("._")
            and "__MACOSX" not in path.parts)


def _find_ham_metadata(folder: Path) -> Path | None:
    for pattern in ("HAM10000_metadata.csv", "HAM10000_metadata*.csv", "HAM10000_metadata*.tab",
                    "HAM10000_metadata", "HAM10000_metadata*.txt"):
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found[0]
    return None


def _locate_ham(root: str | Path | None) -> tuple[Path, Path]:
    """The HAM10000 folder and its metadata file, or a :class:`DatasetNotFoundError`.

    Besides ``<data root>/ham10000`` itself, accepts the data root being the HAM10000 folder, and
    one extra level of nesting (e.g. a Kaggle download unzipped into a sub-folder).
    """
    folder = dataset_dir("ham10000", root)
    if not folder.is_dir():
        direct = folder.parent
        if direct.is_dir() and _find_ham_metadata(direct):
            folder = direct
        else:
            raise _not_found("ham10000", folder, "the folder does not exist.", root)
    meta = _find_ham_metadata(folder)
    if meta is None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if _find_ham_metadata(sub):
                return sub, _find_ham_metadata(sub)
        zips = sorted(folder.glob("HAM10000_images_part*.zip"))
        images = _index_ham_images(folder)
        have = (f" (it holds {len(images)} images and {len(zips)} zip(s), but no metadata)"
                if images or zips else "")
        raise _not_found("ham10000", folder, f"no HAM10000_metadata.csv found{have}.", root)
    return folder, meta


def _read_ham_metadata(path: Path) -> pd.DataFrame:
    """Read either metadata variant (Dataverse, with ``dataset``; Kaggle, without), CSV or TSV."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    sep = "\t" if "\t" in first else ","
    meta = pd.read_csv(path, sep=sep, encoding="utf-8-sig", dtype={"lesion_id": str,
                                                                  "image_id": str, "dx": str})
    meta.columns = [str(c).strip() for c in meta.columns]
    return meta


def _index_ham_images(folder: Path) -> dict[str, Path]:
    """Map image_id to file for every known local layout (flat, images/, Kaggle part folders)."""
    names = {"images", "ham10000_images", "ham10000_images_part_1", "ham10000_images_part_2",
             "ham10000_images_part1", "ham10000_images_part2"}
    dirs = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and p.name.lower() in names)
    index: dict[str, Path] = {}
    for sub in dirs:
        for path in sorted(sub.glob("ISIC_*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                index.setdefault(path.stem, path)
    return index


def load_ham10000(root: str | Path | None = None, *, allow_missing: bool = False,
                  progress: bool = False) -> pd.DataFrame:
    """HAM10000 as a sample table, one row per image, classes in :data:`HAM_CLASSES` order.

    Accepts both metadata variants (Dataverse, with a ``dataset`` column; Kaggle, without) and
    every common layout of the images (see :func:`_index_ham_images`); the Dataverse zips are
    unpacked into ``images/`` when images are missing. Images missing from disk raise
    :class:`DatasetNotFoundError` naming a few of them, unless ``allow_missing`` is set, in which
    case they are dropped with a warning. Whether each image *decodes* is checked separately
    (:func:`helpers.images.check_images`).
    """
    folder, meta_path = _locate_ham(root)
    meta = _read_ham_metadata(meta_path)
    expected = {"lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"}
    lacking = expected - set(meta.columns)
    if lacking:
        raise _not_found("ham10000", folder, f"{meta_path.name} lacks the columns "
                         f"{sorted(lacking)}; it is not a HAM10000 metadata file.", root)
    meta["dx"] = meta["dx"].str.strip()
    unknown = set(meta["dx"]) - set(HAM_CLASSES)
    if unknown:
        raise ValueError(f"{meta_path} has unknown diagnoses {sorted(unknown)}; expected "
                         f"{list(HAM_CLASSES)}")
    repeated = meta.loc[meta["image_id"].duplicated(), "image_id"]
    if len(repeated):
        raise ValueError(f"{meta_path} lists {len(repeated)} image ids more than once "
                         f"(e.g. {', '.join(repeated[:3])})")
    if "dataset" not in meta.columns:  # the Kaggle copy of the metadata
        meta["dataset"] = pd.NA
    index = _index_ham_images(folder)
    zips = sorted(folder.glob("HAM10000_images_part*.zip"))
    if zips and not set(meta["image_id"]) <= set(index):
        for archive in zips:
            _unzip_images(archive, folder / "images", progress=progress)
        index = _index_ham_images(folder)
    meta["path"] = meta["image_id"].map(lambda i: str(index[i]) if i in index else None)
    missing = meta.loc[meta["path"].isna(), "image_id"].tolist()
    if missing and (not allow_missing or len(missing) == len(meta)):
        raise _not_found(
            "ham10000", folder,
            f"{len(missing)} of {len(meta)} images listed in {meta_path.name} are missing "
            f"(e.g. {', '.join(missing[:3])}); looked for ISIC_*.jpg in the folder, images/, "
            f"HAM10000_images_part_1/, HAM10000_images_part_2/ and HAM10000_images_part_*.zip.",
            root,
        )
    if missing:
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

def _locate_melanoma(root: str | Path | None) -> Path:
    """The melanoma10k folder holding ``train/`` (one extra level of nesting is accepted,
    e.g. Kaggle's ``melanoma_cancer_dataset/``)."""
    folder = dataset_dir("melanoma10k", root)
    if not folder.is_dir():
        raise _not_found("melanoma10k", folder, "the folder does not exist.", root)
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        return folder
    nested = [p for p in sorted(folder.iterdir())
              if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())]
    if len(nested) == 1:
        return nested[0]
    raise _not_found("melanoma10k", folder,
                     "no train/ folder found (expected train/benign and train/malignant).", root)


def load_melanoma10k(root: str | Path | None = None, *, splits: Iterable[str] = ("train", "test"),
                     deduplicate: bool = True, progress: bool = False) -> pd.DataFrame:
    """The Kaggle melanoma10k set as a sample table (``label`` benign/malignant).

    Reads ``train/`` and, when present, ``test/`` (column ``origin_split``); a split that is
    present must have both ``benign/`` and ``malignant/`` images, and ``train/`` must be there.
    Exact duplicates are found by SHA-256 of the file: the ``group`` column is that hash. With
    ``deduplicate`` only the first copy of each is kept (train before test); copies of one file
    with *different* labels cannot be trusted and are all dropped. ``table.attrs`` records
    ``duplicates_dropped`` (count), ``duplicate_files`` (the dropped copies, each with the path it
    duplicates) and ``label_conflicts`` (hashes labelled both ways).
    """
    folder = _locate_melanoma(root)
    splits = tuple(splits)
    rows = []
    for split in splits:
        for label in BINARY_CLASSES:
            sub = folder / split / label
            if not sub.is_dir():
                continue
            for path in sorted(sub.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    rows.append({"image_id": f"{split}_{path.stem}", "path": str(path),
                                 "label": label, "origin_split": split})
    present = {(r["origin_split"], r["label"]) for r in rows}
    wanted = [s for s in splits if s == "train" or (folder / s).is_dir()]
    for split in wanted:
        for label in BINARY_CLASSES:
            if (split, label) not in present:
                have = ", ".join(f"{s}/{lab}" for s, lab in sorted(present)) or "nothing"
                raise _not_found("melanoma10k", folder,
                                 f"{split}/{label} is missing or has no images (found: {have}); "
                                 f"the dataset is incomplete.", root)
    table = pd.DataFrame(rows)
    repeated = table.loc[table["image_id"].duplicated(), "image_id"]
    if len(repeated):
        raise ValueError(f"melanoma10k: file names repeat within a split across classes "
                         f"(e.g. {', '.join(repeated[:3])}); rename them so ids stay unique.")
    table["group"] = [file_digest(p) for p in tqdm(table["path"], desc="hash melanoma10k",
                                                   unit="img", leave=False,
                                                   disable=not progress)]
    table["dataset"] = "melanoma10k"
    table["label"] = pd.Categorical(table["label"], categories=BINARY_CLASSES)
    labels_per_hash = table.groupby("group", observed=True)["label"].nunique()
    conflicts = labels_per_hash.index[labels_per_hash > 1].tolist()
    dropped_files: list[tuple[str, str]] = []
    if deduplicate:
        first_path = table.drop_duplicates("group").set_index("group")["path"]
        dup = table["group"].duplicated(keep="first") | table["group"].isin(conflicts)
        dropped_files = [(p, first_path[g]) for p, g in zip(table.loc[dup, "path"],
                                                              table.loc[dup, "group"])]
        table = table[~dup]
    table = table[["image_id", "path", "label", "group", "dataset", "origin_split"]]
    table = table.reset_index(drop=True)
    table.attrs["duplicates_dropped"] = len(dropped_files)
    table.attrs["duplicate_files"] = dropped_files
    table.attrs["label_conflicts"] = conflicts
    return table


def subsample(table: pd.DataFrame, max_images: int | None, seed: int = 42,
              min_per_class: int = 10) -> pd.DataFrame:
    """A class-stratified, group-respecting subsample of about ``max_images`` rows.

    Every class keeps at least ``min_per_class`` images (or all it has) so that the smoke
    profile still sees rare classes. Whole groups are kept or dropped together, so the result
    can be a little larger than ``max_images``. Reproducible from ``seed``.
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


def locate(name: str, root: str | Path | None = None) -> Path:
    """The folder holding dataset ``name`` (cheap: nothing is read or hashed), or a
    :class:`DatasetNotFoundError` saying where it was looked for and how to get it."""
    if name == "ham10000":
        return _locate_ham(root)[0]
    if name == "melanoma10k":
        return _locate_melanoma(root)
    raise ValueError(f"unknown dataset {name!r}: use {', '.join(REGISTRY)}")


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.datasets",
                                     description="Find or download the book's datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download a dataset (resumable, hash-checked)")
    dl.add_argument("name", choices=sorted(REGISTRY))
    dl.add_argument("--root", default=None, help=f"data root (default: ${config.DATA_ENV} or data/)")
    dl.add_argument("--only", nargs="+", default=(), metavar="FILE",
                    help=f"fetch only these registered files, e.g. {HAM10000_MASKS.name}")
    check = sub.add_parser("check", help="say whether a dataset is found and how many images it has")
    check.add_argument("name", choices=sorted(REGISTRY))
    check.add_argument("--root", default=None)
    check.add_argument("--images", action="store_true",
                       help="also decode every image and list the unreadable ones")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            folder = download(args.name, args.root, only=args.only)
            print(f"{REGISTRY[args.name].name} ready in {folder}")
        else:
            loader = load_ham10000 if args.name == "ham10000" else load_melanoma10k
            table = loader(args.root)
            print(f"{REGISTRY[args.name].name}: {len(table)} images")
            if table.attrs.get("duplicates_dropped"):
                print(f"({table.attrs['duplicates_dropped']} exact duplicate files left out)")
            print(table["label"].value_counts().to_string())
            if args.images:
                from helpers.images import check_images

                _, problems = check_images(table)
                print(f"{len(problems)} unreadable image(s)")
                return 1 if len(problems) else 0
    except (DatasetNotFoundError, DownloadError, ValueError) as err:
        print(err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
