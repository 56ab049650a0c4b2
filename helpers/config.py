"""Profiles (smoke, laptop, full) and the paths every chapter uses.

Profiles live in ``book/profiles.yml``: one file for the papermill runner and the chapters alike.
Paths are resolved in one order everywhere: an explicit argument, then an environment variable,
then a folder inside the repository.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILES_FILE = REPO_ROOT / "book" / "profiles.yml"

DATA_ENV = "SKINBOOK_DATA"
"""Environment variable naming the folder that holds ``ham10000/`` and ``melanoma10k/``."""
RUNS_ENV = "SKINBOOK_RUNS"
"""Environment variable naming where run artifacts (splits, caches, models) are written."""
WEIGHTS_ENV = "SKINBOOK_WEIGHTS"
"""Environment variable naming a folder of local ImageNet weight files (``*.h5``)."""


@dataclass(frozen=True)
class Profile:
    """How big a run of the book is. Every field comes from ``book/profiles.yml``."""

    name: str
    description: str
    max_images: int | None
    melanoma_max_images: int | None
    image_size: tuple[int, int]
    batch_size: int
    epochs_head: int
    epochs_finetune: int
    backbones: tuple[str, ...]
    melanoma_backbones: tuple[str, ...]
    """Backbones chapter 03 trains on the melanoma10k benign/malignant task."""
    pretraining_backbone: str
    """The backbone chapter 03 also trains from random weights (how much ImageNet buys)."""
    explain_images: int
    shap_nsamples: int
    bootstrap_rounds: int
    seed: int = 42
    strategy: str = "auto"
    """tf.distribute strategy: auto, default, mirrored or multi_worker (``helpers.distribute``)."""
    mixed_precision: bool = False
    """Train in Keras' mixed_float16 policy when a GPU is visible (ignored on a CPU)."""
    cell_timeout_s: int | None = None
    """The book runner fails a chapter whose cell runs longer than this (None: no limit)."""

    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]


def profile_names(path: Path = PROFILES_FILE) -> list[str]:
    """The profiles defined in ``book/profiles.yml``, in file order."""
    return list(_read_profiles(path))


def load_profile(name: str, path: Path = PROFILES_FILE) -> Profile:
    """Read one named profile; an unknown name or key raises ``ValueError`` listing valid ones."""
    profiles = _read_profiles(path)
    if name not in profiles:
        raise ValueError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(profiles)} (defined in {path})."
        )
    raw = dict(profiles[name])
    known = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"Profile {name!r} in {path} has unknown keys: {sorted(unknown)}")
    missing = {f.name for f in dataclasses.fields(Profile) if f.default is dataclasses.MISSING}
    missing -= set(raw) | {"name"}
    if missing:
        raise ValueError(f"Profile {name!r} in {path} is missing keys: {sorted(missing)}")
    raw["image_size"] = tuple(int(v) for v in raw["image_size"])
    raw["backbones"] = tuple(raw["backbones"])
    raw["melanoma_backbones"] = tuple(raw["melanoma_backbones"])
    return Profile(name=name, **raw)


def _read_profiles(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where datasets are looked for: the argument, else ``$SKINBOOK_DATA``, else ``data/``."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    return REPO_ROOT / "data"


def runs_root(profile: str, explicit: str | os.PathLike | None = None) -> Path:
    """Where a profile's artifacts go: the argument, else ``$SKINBOOK_RUNS``, else ``book/runs``.

    Each profile gets its own sub-folder so a smoke run never overwrites a laptop run.
    """
    if explicit is not None:
        base = Path(explicit)
    elif os.environ.get(RUNS_ENV):
        base = Path(os.environ[RUNS_ENV])
    else:
        base = REPO_ROOT / "book" / "runs"
    path = base.expanduser().resolve() / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """The folder where chapters save their figures (``figures/`` at the repository root)."""
    path = REPO_ROOT / "figures"
    path.mkdir(exist_ok=True)
    return path
