# Two commands for a fresh machine with only Python:
#   make demo   -- creates .venv if missing, installs gradclip, runs `gradclip demo`
#   make test   -- creates .venv if missing, runs lint, type checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pin the torch build deliberately: torch==2.13.0 is the CPU wheel on the project's
# machines; elsewhere override, e.g. `make test TORCH_SPEC='torch>=2.6'`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint check bench clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,plot,tensorboard]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gradclip demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_ops.py

clean:
	rm -rf $(VENV) build src/*.egg-info
