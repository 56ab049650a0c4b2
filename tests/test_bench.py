"""bench/ scripts reject bad arguments before any measurement starts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_training  # noqa: E402


@pytest.mark.parametrize("flag", ["--onednn-backbone", "--cache-backbone", "--backbones"])
def test_bench_training_rejects_an_unknown_backbone(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_training.main([flag, "nope", "--skip", "a", "b", "c", "d"])
    assert stop.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
