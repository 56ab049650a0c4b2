"""Shared fixtures: where the real data lives, and small real samples of it.

Tests run on the real shared images (``$SKINBOOK_DATA``, else ``../shared/data`` beside the
repository). Without them a test that needs data is skipped with the reason, except in CI
(``CI=true``), where missing data is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("SKINBOOK_DATA")
    return Path(env).expanduser().resolve() if env else (REPO.parent / "shared" / "data").resolve()


def _require(path: Path, what: str, hint: str = "set SKINBOOK_DATA to the folder holding "
             "ham10000/ and melanoma10k/ (see data/README.md)") -> Path:
    if not path.exists():
        message = f"{what} not found at {path}; {hint}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (holds ``ham10000/`` and ``melanoma10k/``)."""
    return _require(_data_root(), "The data root")


@pytest.fixture(scope="session")
def ham_dir(data_root: Path) -> Path:
    """The real HAM10000 folder (metadata CSV and ``images/``)."""
    return _require(data_root / "ham10000" / "HAM10000_metadata.csv", "HAM10000").parent


@pytest.fixture(scope="session")
def melanoma_dir(data_root: Path) -> Path:
    """The real melanoma10k folder (``train/benign``, ``train/malignant``)."""
    return _require(data_root / "melanoma10k" / "train", "melanoma10k").parent


@pytest.fixture(scope="session")
def mobilenet_025_weights() -> Path:
    """The real ImageNet weights of MobileNet alpha 0.25 (the smallest backbone), no top."""
    env = os.environ.get("SKINBOOK_WEIGHTS")
    root = Path(env) if env else REPO.parent / "shared" / "keras" / "models"
    return _require(root / "mobilenet_2_5_224_tf_no_top.h5", "MobileNet 0.25 ImageNet weights",
                    "set SKINBOOK_WEIGHTS to the folder of Keras *_no_top.h5 files")


@pytest.fixture(scope="session")
def ham_table(data_root: Path, ham_dir: Path):
    """The full real HAM10000 sample table (10,015 rows), loaded once per session."""
    from helpers import datasets

    return datasets.load_ham10000(data_root)


@pytest.fixture(scope="session")
def ham_sample(ham_table):
    """A small real HAM10000 sample: 4 images of every class (whole lesions), for fast tests."""
    rows = (ham_table.drop_duplicates("group")
            .groupby("label", observed=True, group_keys=False)
            .apply(lambda g: g.sample(4, random_state=0)))
    return ham_table[ham_table["group"].isin(rows["group"])].reset_index(drop=True)


@pytest.fixture
def tmp_data_root(tmp_path: Path, monkeypatch) -> Path:
    """An empty data root in tmp, also set as ``$SKINBOOK_DATA`` for the test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("SKINBOOK_DATA", str(root))
    return root
