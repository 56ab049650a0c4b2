"""Keep C++ start-up notices and converter chatter out of notebook outputs and JSON streams.

TensorFlow, the TFLite converter and LiteRT print from C++ straight to the process's file
descriptors, past Python's ``sys.stdout``/``sys.stderr`` and past ``TF_CPP_MIN_LOG_LEVEL``.
In a notebook those lines land in the cell output; in ``python -m helpers.predict`` they would
break the one-JSON-object-per-line output. This module routes them to a log file instead.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def quiet_fds() -> Iterator[Path]:
    """Send this process's stdout/stderr (file descriptors 1 and 2) to a log file meanwhile.

    The log's path is yielded so a failure can show its tail: read it inside the block. The log
    is deleted when the block ends normally and kept when an exception leaves it.
    """
    with tempfile.NamedTemporaryFile("w+b", prefix="skinbook-quiet-", suffix=".log",
                                     delete=False) as log:
        path = Path(log.name)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield path
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    path.unlink(missing_ok=True)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import finder: ``import tensorflow`` runs inside :func:`quiet_fds`.

    TensorFlow announces "oneDNN custom operations are on" from C++ before its logging is set
    up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide it. Turning oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``) would hide it too, but oneDNN trains the book's MobileNets
    about 1.4-1.6x faster on a laptop CPU (``bench/bench_training.py`` measures it), so the book
    keeps oneDNN and silences the notice instead. Python errors still propagate; if the import
    fails, the log of what TensorFlow printed is named in the error.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with quiet_fds() as log:
                try:
                    load(module)
                except BaseException as err:
                    err.add_note(f"TensorFlow's start-up output: {log}")
                    raise

        spec.loader.exec_module = exec_module
        return spec


def install_quiet_tensorflow_import() -> None:
    """Make the next ``import tensorflow`` (anywhere, e.g. inside Keras) quiet; idempotent."""
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())
