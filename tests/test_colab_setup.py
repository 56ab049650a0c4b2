"""book/colab_setup.sh and helpers/requirements.py: setting the book up where the notebook
kernel is the machine's own Python (Google Colab), run here as a user would run it.

The sandbox is a fresh clone and a fresh virtual environment that sees this checkout's installed
packages through a .pth file, so that pip finds every requirement satisfied and nothing large
is downloaded; the book itself is installed into the sandbox from the clone. The GPU branch
(nvidia-smi present) is not exercised here: it installs TensorFlow's CUDA build (gigabytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "helpers"))
import requirements as reqs  # noqa: E402  (a script module: importable before installation)

sys.path.pop(0)


def test_requirements_never_mix_the_two_tensorflow_builds():
    cpu = reqs.requirements(gpu=False, extras=("test",))
    gpu = reqs.requirements(gpu=True, extras=("test",))
    assert any(r.startswith("tensorflow-cpu") for r in cpu)
    assert not any(r.startswith("tensorflow[") for r in cpu)
    assert not any(r.startswith("tensorflow-cpu") for r in gpu)
    assert any(r.startswith("tensorflow[and-cuda]") for r in gpu)
    assert any(r.startswith("pytest") for r in cpu) and any(r.startswith("pytest") for r in gpu)
    # the same TensorFlow release either way
    version = lambda rs, p: next(r for r in rs if r.startswith(p)).split("~=")[1]  # noqa: E731
    assert version(cpu, "tensorflow-cpu") == version(gpu, "tensorflow[and-cuda]")
    with pytest.raises(SystemExit, match="unknown extra colab"):
        reqs.requirements(gpu=False, extras=("colab",))


def test_colab_setup_installs_the_book_from_a_fresh_clone(tmp_path):
    if not os.environ.get("SKINBOOK_DATA"):
        pytest.skip("SKINBOOK_DATA is not set (the script ends by checking the data)")
    clone = tmp_path / "skinbook"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "py")], check=True)
    python = tmp_path / "py" / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], check=True, capture_output=True,
                                  text=True).stdout.strip())
    (purelib / "_this_checkout.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PYTHON": str(python), "SKIP_DATA": "1",
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                   if not (Path(p) / "nvidia-smi").exists())}
    done = subprocess.run(["bash", str(clone / "book" / "colab_setup.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Ready." in done.stdout and "10015" in done.stdout.replace(",", "")
    where = subprocess.run([str(python), "-c", "import helpers; print(helpers.__file__)"],
                           env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(clone), where  # the clone is what got installed
