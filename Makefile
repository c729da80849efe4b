# Two commands on a fresh machine: `make demo` and `make test`.
# Both depend on `setup`, which builds .venv once (a second run takes seconds).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET_PIP := { grep -v 'is ignored' || true; }

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TFF_VERSION := 0.87.0
DEMO_DIR ?= results/demo
DEMO_PROMPTS := "to be or not to" "i pray you" "what is the"
# pytest-xdist processes for `make test`, each with its own TFF worker. On 2 cores,
# two took 840 s against 1,366 s for one (BUILD_NOTES.md, "Tests").
TEST_WORKERS ?= 2

.PHONY: setup demo test lint clean-demo bench

setup: $(STAMP)

$(STAMP): requirements/lock.txt setup.py
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v < (3, 12) else "Python 3.10 or 3.11 is needed (TFF 0.87 needs <3.12); found %d.%d. Set PYTHON=/path/to/python3.11" % v)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned environment (requirements/lock.txt); the first time takes a few minutes."
	$(PY) -m pip install -q -r requirements/lock.txt 2>&1 | $(QUIET_PIP)
	@echo "Installing tensorflow-federated==$(TFF_VERSION) without its resolver (its jax==0.4.14 pin is not served; 0.4.13 is used, see BUILD_NOTES.md)."
	$(PY) -m pip install -q --no-deps tensorflow-federated==$(TFF_VERSION) 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -c 'import tensorflow_federated, tff_research'
	$(PY) -m tff_research.runtime.check_install
	touch $(STAMP)

demo: setup
	$(PY) -m experiments.train_nwp --preset=demo --output_dir=$(DEMO_DIR) --experiment_name=shakespeare_fedavg
	@echo "Top-5 next words from the trained model:"
	@$(PY) -m tff_research.predict $(DEMO_DIR)/shakespeare_fedavg $(DEMO_PROMPTS)

test: setup lint
	$(PY) -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) --durations=12

# ruff.toml: pycodestyle, pyflakes, bugbear and import order; the code stays clean.
lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m benchmarks.round_overhead

clean-demo:
	rm -rf $(DEMO_DIR)
