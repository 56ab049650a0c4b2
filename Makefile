# One entry point for the book. `make book` runs it, `make test` tests it (see README.md).
# Data is read in place from $(SKINBOOK_DATA); nothing is copied into the repository.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
# Defaults for a clone with ../shared beside it; otherwise data/ and Keras downloads are used.
ifneq ($(wildcard ../shared/data),)
SKINBOOK_DATA ?= $(abspath ../shared/data)
export SKINBOOK_DATA
endif
ifneq ($(wildcard ../shared/keras/models),)
SKINBOOK_WEIGHTS ?= $(abspath ../shared/keras/models)
export SKINBOOK_WEIGHTS
endif
export TF_CPP_MIN_LOG_LEVEL = 3
export PYDEVD_DISABLE_FILE_VALIDATION = 1
# GPU=1 (`make install GPU=1`): TensorFlow's CUDA build, pyproject's `gpu` extra, instead of
# tensorflow-cpu (Linux x86_64 with an NVIDIA driver; book/training_at_scale.md). The two builds
# are one `tensorflow` package and must not be installed together (see pyproject.toml), so this
# path never installs tensorflow-cpu. The venv remembers it (stamp .installed-gpu): later targets
# keep the CUDA build. Back to the CPU build: rm -rf $(VENV) && make install.
ifneq ($(wildcard $(VENV)/.installed-gpu),)
GPU ?= 1
ifneq ($(GPU),1)
$(error $(VENV) holds the CUDA build of TensorFlow (make install GPU=1); for the CPU build: rm -rf $(VENV) && make install)
endif
endif
INSTALLED := $(VENV)/.installed$(if $(filter 1,$(GPU)),-gpu)

.PHONY: install book publish results test notebooks check-notebooks clean site student

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,site]"
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 --display-name "Python 3 (skinbook)" > /dev/null
	touch $@

$(VENV)/.installed-gpu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet -y tensorflow-cpu
	$(PY) helpers/requirements.py --gpu --extras test site > $(VENV)/requirements-gpu.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements-gpu.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 --display-name "Python 3 (skinbook)" > /dev/null
	touch $@

install: $(INSTALLED)  ## create .venv and install the book and its tools (GPU=1: the CUDA build)

notebooks: install  ## regenerate chapters/*.ipynb from their .py sources (py -> ipynb only)
	$(PY) -m helpers.notebooks sync

check-notebooks: install  ## fail if a chapters/*.ipynb is out of sync with its .py source
	$(PY) -m helpers.notebooks check

book: install  ## run every chapter with papermill (resumable): make book PROFILE=smoke|laptop|full
	$(PY) -m helpers.book --profile $(PROFILE)

publish: install  ## copy the executed chapters of PROFILE, cleaned, into book/published/PROFILE (committed)
	$(PY) -m helpers.publish --profile $(PROFILE)

results: install  ## collect the profile's run folders into book/results/<profile>.json, render README
	$(PY) -m helpers.results --profile $(PROFILE) --render

site: install  ## the website from the executed (else the published) chapters: make site PROFILE=smoke|laptop
	$(PY) -m helpers.site --profile $(PROFILE)

student: install  ## student copies (solutions removed, no outputs) in book/student/
	$(PY) -m helpers.student write

test: install  ## unit tests, then the smoke book executed and re-checked with nbval
	$(PY) -m helpers.book --profile smoke
	$(PY) -m pytest tests book/executed/smoke --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

clean:  ## remove generated files (executed notebooks, runs, figures, site)
	rm -rf book/executed book/runs book/_build book/student figures/*.png
