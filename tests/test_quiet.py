"""C++ output is kept out of notebook outputs: file-descriptor redirection and the quiet import."""

import os
import subprocess
import sys

import pytest

from helpers.quiet import quiet_fds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONEDNN_NOTICE = "oneDNN custom operations are on"


def test_quiet_fds_swallows_output_written_to_the_file_descriptors(capfd):
    with quiet_fds() as log:
        os.write(1, b"converter noise on stdout\n")
        os.write(2, b"converter noise on stderr\n")
        assert "noise on stderr" in log.read_text()
    os.write(1, b"visible again\n")
    out, err = capfd.readouterr()
    assert "noise" not in out + err
    assert "visible again" in out
    assert not log.exists(), "the log of a block that ended normally is deleted"


def test_quiet_fds_keeps_the_log_when_the_block_fails():
    with pytest.raises(RuntimeError), quiet_fds() as log:
        os.write(2, b"what went wrong\n")
        raise RuntimeError("conversion failed")
    assert "what went wrong" in log.read_text()
    log.unlink()


def _stderr_of(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}  # oneDNN on
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_importing_helpers_first_silences_tensorflows_onednn_notice():
    # Without helpers, TensorFlow prints the notice despite TF_CPP_MIN_LOG_LEVEL=3 ...
    assert ONEDNN_NOTICE in _stderr_of("import tensorflow")
    # ... through helpers (every chapter's first import) nothing reaches stderr, and Keras works.
    quiet = _stderr_of("import helpers, keras; print(keras.layers.Dense(2)(keras.ops.zeros((1, 3))))")
    assert ONEDNN_NOTICE not in quiet and "absl::InitializeLog" not in quiet, quiet
