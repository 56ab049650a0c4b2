"""helpers.resources: the peak memory and disk figures the book runner and training record."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import resources


def test_peak_memory_counts_a_child_process():
    """A child that holds 300 MiB for a second (as a chapter's kernel holds its arrays) shows up
    in the peak of the process tree, and the peak is not far above what was allocated. Measured
    from a fresh process, so that no other test's processes share the tree."""
    child = ("import time, numpy as np; a = np.ones(300 * 2**20, dtype=np.uint8); "
             "time.sleep(1.5)")
    parent = (
        "import subprocess, sys\n"
        "from helpers.resources import PeakMemory\n"
        "with PeakMemory(interval_s=0.1) as peak:\n"
        "    base = peak._tree_mb()\n"
        f"    subprocess.run([sys.executable, '-c', {child!r}], check=True)\n"
        "print(base, peak.mb)\n")
    out = subprocess.run([sys.executable, "-c", parent], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    base, peak = map(float, out.split())
    assert base + 280 <= peak < base + 300 + 400, (base, peak)


def test_process_peak_and_directory_size(tmp_path):
    assert resources.process_peak_mb() > 10          # a Python process with numpy loaded
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"\0" * 3 * 2**20)
    (tmp_path / "y.bin").write_bytes(b"\0" * 2**20)
    assert resources.directory_mb(tmp_path) == 4.0
    assert resources.directory_mb(tmp_path / "missing") == 0.0
