"""What a run costs in memory and disk, measured while it runs (for the README's resource table).

- :class:`PeakMemory` samples the resident memory of this process and all its descendants (a
  chapter's kernel is a child of the book runner) and keeps the peak of their sum.
- :func:`process_peak_mb` is this process's own peak, from the operating system (training).
- :func:`directory_mb` is the size of a folder on disk (the profile's run folders).
- :func:`largest_gib` is how the tables show the largest of such figures.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import psutil


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb``: the largest resident memory of this
    process plus its descendants, sampled every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _tree_mb(self) -> float:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # a child that ended between listing and reading
        return total / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.mb = max(self.mb, self._tree_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = round(max(self.mb, self._tree_mb()), 1)


def process_peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss``: KiB on Linux, bytes
    on macOS). In a process that trains several runs it is the peak over all of them so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def directory_mb(path: str | Path) -> float:
    """Total size of the files under ``path`` in MiB (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return round(total / 2**20, 1)


def largest_gib(values_mb: Iterable[float | None]) -> str:
    """The largest of ``values_mb`` in GiB with one decimal, or "not recorded" if none is."""
    values = [v for v in values_mb if v is not None]
    return f"{max(values) / 1024:.1f}" if values else "not recorded"
