#!/usr/bin/env bash
# Set up the book where the notebook kernel is the machine's own Python, as on Google Colab:
# install the book's requirements into that Python (the CUDA build of TensorFlow when a GPU is
# present, else tensorflow-cpu), then download HAM10000 and its lesion masks into data/ (resumed
# and hash-checked; melanoma10k needs your Kaggle credentials, see data/README.md).
#
#   bash book/colab_setup.sh            # install and download
#   SKIP_DATA=1 bash book/colab_setup.sh  # install only (the data is already there)
#
# Afterwards run the chapters from chapters/ with profile "laptop" (GPU: "full" also works).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), sys.version' || {
  echo "The book needs Python 3.11 or 3.12; this is $("$PYTHON" --version)." >&2; exit 1; }

gpu=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu=(--gpu)
  echo "GPU found: installing TensorFlow's CUDA build (tensorflow[and-cuda]), not tensorflow-cpu."
  "$PYTHON" -m pip uninstall --quiet -y tensorflow-cpu >/dev/null 2>&1 || true
fi
requirements="$(mktemp)"
"$PYTHON" helpers/requirements.py "${gpu[@]}" --extras test > "$requirements"
"$PYTHON" -m pip install --quiet -r "$requirements"
"$PYTHON" -m pip install --quiet --no-deps -e .
rm -f "$requirements"

if [ -z "${SKIP_DATA:-}" ]; then
  "$PYTHON" -m helpers.datasets download ham10000
fi
"$PYTHON" -m helpers.datasets check ham10000
echo "Ready. Open chapters/01_exploring_the_data.ipynb and set profile = \"laptop\"."
