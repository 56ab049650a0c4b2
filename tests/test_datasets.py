"""helpers.datasets on the real shared data, and on every accepted layout built from real images."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from helpers import config, datasets
from helpers.datasets import DatasetNotFoundError

HAM_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142,
              "df": 115}


# --- the real data -----------------------------------------------------------------------------

def test_real_ham10000_has_every_image_and_the_published_class_counts(ham_table):
    assert len(ham_table) == 10_015
    assert ham_table["label"].value_counts().to_dict() == HAM_COUNTS
    assert list(ham_table["label"].cat.categories) == list(datasets.HAM_CLASSES)
    assert ham_table["image_id"].is_unique
    assert ham_table["group"].nunique() == 7_470  # lesions
    assert (ham_table["group"] == ham_table["lesion_id"]).all()
    assert ham_table["source"].notna().all()  # the Dataverse metadata has the `dataset` column
    assert {"image_id", "path", "label", "group", "dataset"} <= set(ham_table.columns)
    assert all(Path(p).is_file() for p in ham_table["path"].sample(200, random_state=0))


def test_binary_view_of_real_ham10000(ham_table):
    binary = datasets.binary_view(ham_table)
    assert list(binary["label"].cat.categories) == ["benign", "malignant"]
    malignant = sum(HAM_COUNTS[c] for c in ("mel", "bcc", "akiec"))
    assert binary["label"].value_counts().to_dict() == {"benign": 10_015 - malignant,
                                                         "malignant": malignant}
    assert (binary["dx"] == ham_table["label"].astype(str)).all()
    assert set(binary.loc[binary["label"] == "malignant", "dx"]) == set(datasets.MALIGNANT_HAM)
    assert ham_table["label"].dtype.categories.tolist() == list(datasets.HAM_CLASSES)  # not mutated


def test_real_melanoma10k_loads_and_drops_its_exact_duplicates(data_root, melanoma_dir):
    table = datasets.load_melanoma10k(data_root)
    files = [p for p in (melanoma_dir / "train").rglob("*") if p.is_file()]
    assert len(files) == 9_605
    assert table.attrs["duplicates_dropped"] == 14  # 14 pairs of byte-identical files
    assert len(table) == 9_605 - 14
    assert table["group"].is_unique and table["image_id"].is_unique
    assert table["label"].value_counts().to_dict() == {"benign": 5000 - 8, "malignant": 4605 - 6}
    assert table.attrs["label_conflicts"] == []
    kept = set(table["path"])
    for dropped, original in table.attrs["duplicate_files"]:
        assert dropped not in kept and original in kept
        assert Path(dropped).read_bytes() == Path(original).read_bytes()
    assert set(table["origin_split"]) == {"train"}


def test_real_melanoma10k_without_deduplication_keeps_every_file(data_root, melanoma_dir):
    table = datasets.load_melanoma10k(data_root, deduplicate=False)
    assert len(table) == 9_605
    assert table["group"].nunique() == 9_605 - 14


# --- HAM10000 layouts built from real images ---------------------------------------------------

def _metadata(ham_dir: Path, sample: pd.DataFrame, with_dataset: bool = True) -> pd.DataFrame:
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    meta = meta[meta["image_id"].isin(sample["image_id"])]
    return meta if with_dataset else meta.drop(columns="dataset")


def _link(src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dest)


def build_ham(root: Path, sample: pd.DataFrame, ham_dir: Path, layout: str,
              with_dataset: bool = True) -> Path:
    """A HAM10000 folder under ``root`` in one of the layouts users have."""
    folder = root / "ham10000"
    folder.mkdir(parents=True)
    _metadata(ham_dir, sample, with_dataset).to_csv(folder / "HAM10000_metadata.csv", index=False)
    paths = sample["path"].tolist()
    half = len(paths) // 2
    if layout == "flat":
        for p in paths:
            _link(p, folder / Path(p).name)
    elif layout == "images":
        for p in paths:
            _link(p, folder / "images" / Path(p).name)
    elif layout in ("kaggle", "kaggle-lowercase"):
        stem = "HAM10000_images_part_" if layout == "kaggle" else "ham10000_images_part_"
        for i, p in enumerate(paths):
            _link(p, folder / f"{stem}{1 if i < half else 2}" / Path(p).name)
    elif layout == "zips":
        for part, chunk in ((1, paths[:half]), (2, paths[half:])):
            with zipfile.ZipFile(folder / f"HAM10000_images_part_{part}.zip", "w") as zf:
                for p in chunk:
                    zf.write(p, arcname=Path(p).name)
                zf.writestr(f"__MACOSX/._{Path(chunk[0]).name}", b"resource fork")
    else:
        raise ValueError(layout)
    return folder


@pytest.mark.parametrize("layout", ["flat", "images", "kaggle", "kaggle-lowercase", "zips"])
def test_every_ham10000_layout_loads(tmp_path, ham_sample, ham_dir, layout):
    folder = build_ham(tmp_path, ham_sample, ham_dir, layout)
    table = datasets.load_ham10000(tmp_path)
    assert len(table) == len(ham_sample)
    assert set(table["image_id"]) == set(ham_sample["image_id"])
    truth = ham_sample.set_index("image_id")
    for row in table.itertuples():
        assert Path(row.path).read_bytes() == Path(truth.loc[row.image_id, "path"]).read_bytes()
        assert row.label == truth.loc[row.image_id, "label"]
        assert row.group == truth.loc[row.image_id, "group"]
    if layout == "zips":
        assert all(Path(p).parent == folder / "images" for p in table["path"])
        assert not any(p.name.startswith("._") for p in (folder / "images").iterdir())


def test_kaggle_metadata_without_dataset_column(tmp_path, ham_sample, ham_dir):
    build_ham(tmp_path, ham_sample, ham_dir, "kaggle", with_dataset=False)
    table = datasets.load_ham10000(tmp_path)
    assert len(table) == len(ham_sample)
    assert table["source"].isna().all()
    assert table["label"].value_counts().to_dict() == ham_sample["label"].value_counts().to_dict()


def test_dataverse_tab_metadata_variant(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "images")
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    (folder / "HAM10000_metadata.csv").unlink()
    meta.to_csv(folder / "HAM10000_metadata.tab", sep="\t", index=False, quoting=2)  # quoted TSV
    table = datasets.load_ham10000(tmp_path)
    assert set(table["image_id"]) == set(ham_sample["image_id"])
    assert table["source"].notna().all()


def test_kaggle_download_unzipped_into_a_subfolder(tmp_path, ham_sample, ham_dir):
    inner = build_ham(tmp_path / "staging", ham_sample, ham_dir, "kaggle")
    (tmp_path / "data" / "ham10000").mkdir(parents=True)
    shutil.move(str(inner), tmp_path / "data" / "ham10000" / "skin-cancer-mnist-ham10000")
    assert len(datasets.load_ham10000(tmp_path / "data")) == len(ham_sample)


def test_data_root_may_be_the_ham10000_folder_itself(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "images")
    assert len(datasets.load_ham10000(folder)) == len(ham_sample)


def test_explicit_root_wins_over_env_and_env_over_default(tmp_path, ham_sample, ham_dir,
                                                          monkeypatch):
    build_ham(tmp_path / "a", ham_sample, ham_dir, "images")
    small = ham_sample.drop_duplicates("label")
    build_ham(tmp_path / "b", small, ham_dir, "images")
    monkeypatch.setenv("SKINBOOK_DATA", str(tmp_path / "b"))
    assert len(datasets.load_ham10000(tmp_path / "a")) == len(ham_sample)
    assert len(datasets.load_ham10000()) == len(small)
    monkeypatch.delenv("SKINBOOK_DATA")
    assert config.data_root() == config.REPO_ROOT / "data"


# --- clear messages for missing or partial data ------------------------------------------------

def test_missing_dataset_message_names_folder_env_and_how_to_get_it(tmp_data_root):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_ham10000()
    message = str(info.value)
    assert str(tmp_data_root / "ham10000") in message
    assert "$SKINBOOK_DATA" in message
    assert "python -m helpers.datasets download ham10000" in message
    assert "HAM10000_images_part_1" in message  # the local layouts are named too


def test_missing_dataset_message_says_where_the_root_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINBOOK_DATA", str(tmp_path / "env-root"))
    with pytest.raises(DatasetNotFoundError, match=r"from the `root` argument"):
        datasets.load_ham10000(tmp_path / "arg-root")
    with pytest.raises(DatasetNotFoundError, match=r"from \$SKINBOOK_DATA"):
        datasets.load_ham10000()


def test_images_without_metadata_is_a_clear_error(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "images")
    (folder / "HAM10000_metadata.csv").unlink()
    expected = rf"no HAM10000_metadata.csv found \(it holds {len(ham_sample)} images"
    with pytest.raises(DatasetNotFoundError, match=expected):
        datasets.load_ham10000(tmp_path)


def test_partial_ham10000_names_the_missing_images(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "images")
    gone = sorted((folder / "images").iterdir())[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"3 of {len(ham_sample)} images") as info:
        datasets.load_ham10000(tmp_path)
    assert gone[0].stem in str(info.value)
    assert "To get it" in str(info.value)
    with pytest.warns(UserWarning, match="3 images missing"):
        table = datasets.load_ham10000(tmp_path, allow_missing=True)
    assert len(table) == len(ham_sample) - 3


def test_damaged_zip_is_a_clear_error(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "zips")
    archive = folder / "HAM10000_images_part_1.zip"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetNotFoundError, match="HAM10000_images_part_1.zip could not be "
                                                   "unpacked.*download it again"):
        datasets.load_ham10000(tmp_path)


def test_metadata_that_is_not_ham10000_is_rejected(tmp_path, ham_sample, ham_dir):
    folder = build_ham(tmp_path, ham_sample, ham_dir, "images")
    (folder / "HAM10000_metadata.csv").write_text("image,diagnosis\nISIC_0000000,nv\n")
    with pytest.raises(DatasetNotFoundError, match="lacks the columns"):
        datasets.load_ham10000(tmp_path)


def test_check_command_reports_found_and_missing(tmp_path, ham_sample, ham_dir, capsys):
    build_ham(tmp_path / "ok", ham_sample, ham_dir, "images")
    assert datasets._main(["check", "ham10000", "--root", str(tmp_path / "ok")]) == 0
    assert f"HAM10000: {len(ham_sample)} images" in capsys.readouterr().out
    assert datasets._main(["check", "ham10000", "--root", str(tmp_path / "none")]) == 1
    assert "To get it" in capsys.readouterr().out


# --- melanoma10k layouts -----------------------------------------------------------------------

def _melanoma_files(melanoma_dir: Path, label: str, n: int, start: int = 0) -> list[Path]:
    return sorted((melanoma_dir / "train" / label).iterdir())[start:start + n]


def build_melanoma(root: Path, melanoma_dir: Path, parts: dict[str, int],
                   nested: str | None = None) -> Path:
    """``parts``: "train/benign" -> number of real images to link there."""
    folder = root / "melanoma10k" / (nested or "")
    for i, (part, n) in enumerate(sorted(parts.items())):
        label = part.split("/")[1]
        for src in _melanoma_files(melanoma_dir, label, n, start=i * 10):
            split = part.split("/")[0]
            # Kaggle numbers test images after train images; keep the ids unique the same way
            _link(str(src), folder / part / f"{split}_{src.name}")
    return folder


def test_melanoma10k_train_and_test_layout(tmp_path, melanoma_dir):
    folder = build_melanoma(tmp_path, melanoma_dir, {"train/benign": 6, "train/malignant": 5,
                                                     "test/benign": 3, "test/malignant": 2})
    # one test image is a byte copy of a training image: dropped from test, train copy kept
    copy_of = sorted((folder / "train" / "benign").iterdir())[0]
    shutil.copy(copy_of, folder / "test" / "benign" / "copy.jpg")
    table = datasets.load_melanoma10k(tmp_path)
    assert table.groupby(["origin_split", "label"], observed=True).size().to_dict() == {
        ("test", "benign"): 3, ("test", "malignant"): 2,
        ("train", "benign"): 6, ("train", "malignant"): 5}
    assert table.attrs["duplicates_dropped"] == 1
    assert table.attrs["duplicate_files"] == [(str(folder / "test" / "benign" / "copy.jpg"),
                                               str(copy_of))]
    only_train = datasets.load_melanoma10k(tmp_path, splits=("train",))
    assert set(only_train["origin_split"]) == {"train"} and len(only_train) == 11


def test_melanoma10k_kaggle_zip_subfolder_is_accepted(tmp_path, melanoma_dir):
    build_melanoma(tmp_path, melanoma_dir, {"train/benign": 3, "train/malignant": 3},
                   nested="melanoma_cancer_dataset")
    assert len(datasets.load_melanoma10k(tmp_path)) == 6


@pytest.mark.parametrize("parts, missing", [
    ({"train/benign": 3}, "train/malignant"),
    ({"train/benign": 3, "train/malignant": 3, "test/benign": 2}, "test/malignant"),
    ({"test/benign": 2, "test/malignant": 2}, "train/benign"),
])
def test_partial_melanoma10k_is_a_clear_error(tmp_path, melanoma_dir, parts, missing):
    build_melanoma(tmp_path, melanoma_dir, parts)
    with pytest.raises(DatasetNotFoundError, match=rf"{missing} is missing or has no images") as e:
        datasets.load_melanoma10k(tmp_path)
    assert "kaggle datasets download" in str(e.value)
    assert str(tmp_path / "melanoma10k") in str(e.value)


def test_missing_melanoma10k_is_a_clear_error(tmp_data_root):
    with pytest.raises(DatasetNotFoundError, match="the folder does not exist") as e:
        datasets.load_melanoma10k()
    assert "Kaggle credentials" in str(e.value) and "$SKINBOOK_DATA" in str(e.value)


def test_same_image_labelled_both_ways_is_dropped(tmp_path, melanoma_dir):
    folder = build_melanoma(tmp_path, melanoma_dir, {"train/benign": 3, "train/malignant": 3})
    shutil.copy(sorted((folder / "train" / "benign").iterdir())[0],
                folder / "train" / "malignant" / "conflict.jpg")
    table = datasets.load_melanoma10k(tmp_path)
    assert len(table) == 5
    assert len(table.attrs["label_conflicts"]) == 1
    assert table.attrs["label_conflicts"][0] not in set(table["group"])


# --- subsample ---------------------------------------------------------------------------------

def test_subsample_keeps_every_class_and_whole_groups(ham_table):
    small = datasets.subsample(ham_table, 300, seed=1)
    assert 280 <= len(small) <= 380  # whole lesions and a floor per rare class overshoot a little
    counts = small["label"].value_counts()
    assert (counts >= 10).all(), counts
    full_sizes = ham_table.groupby("group").size()
    small_sizes = small.groupby("group").size()
    assert (small_sizes == full_sizes[small_sizes.index]).all()  # no lesion is cut in two
    again = datasets.subsample(ham_table, 300, seed=1)
    assert again["image_id"].tolist() == small["image_id"].tolist()
    other = datasets.subsample(ham_table, 300, seed=2)
    assert set(other["image_id"]) != set(small["image_id"])
    assert datasets.subsample(ham_table, None) is ham_table


def test_subsample_of_melanoma10k_is_balanced_like_the_source(data_root, melanoma_dir):
    table = datasets.load_melanoma10k(data_root)
    small = datasets.subsample(table, 200)
    share = small["label"].value_counts(normalize=True)["malignant"]
    full = table["label"].value_counts(normalize=True)["malignant"]
    assert abs(share - full) < 0.03 and len(small) == pytest.approx(200, abs=3)
