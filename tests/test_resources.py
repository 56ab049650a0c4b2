"""helpers.resources: the peak memory and disk figures the book runner and training record."""

from __future__ import annotations

import subprocess
import sys

from helpers import resources


def test_peak_memory_counts_a_child_process(tmp_path):
    """A child that holds 300 MiB for a second (as a chapter's kernel holds its arrays) shows up
    in the peak of the process tree, and the peak is not far above what was allocated."""
    child = ("import time, numpy as np; a = np.ones(300 * 2**20, dtype=np.uint8); "
             "time.sleep(1.5)")
    with resources.PeakMemory(interval_s=0.1) as peak:
        base = peak._tree_mb()
        subprocess.run([sys.executable, "-c", child], check=True)
    assert peak.mb >= base + 280, (base, peak.mb)
    assert peak.mb < base + 300 + 400, (base, peak.mb)


def test_process_peak_and_directory_size(tmp_path):
    assert resources.process_peak_mb() > 10          # a Python process with numpy loaded
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"\0" * 3 * 2**20)
    (tmp_path / "y.bin").write_bytes(b"\0" * 2**20)
    assert resources.directory_mb(tmp_path) == 4.0
    assert resources.directory_mb(tmp_path / "missing") == 0.0
