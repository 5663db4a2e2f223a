# Two commands for a fresh machine with only Python:
#   make demo   -- creates .venv if missing, installs gradclip, runs `gradclip demo`
#   make test   -- creates .venv if missing, runs lint, type checks and the test suite,
#                  which builds the docs strictly too (.ci/run runs exactly this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pin the torch build deliberately: torch==2.13.0 is the CPU wheel on the project's
# machines; elsewhere override, e.g. `make test TORCH_SPEC='torch>=2.6'`.
TORCH_SPEC ?= torch==2.13.0
# Extra pytest arguments, e.g. `make test PYTEST_ARGS='-x tests/test_docs.py'`.
PYTEST_ARGS ?=

.PHONY: demo test lint docs browser bench clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,plot,tensorboard,docs]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gradclip demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks docs/hooks.py
	$(BIN)/ruff format --check src tests benchmarks docs/hooks.py
	$(BIN)/mypy

# The API reference and the guides, built strictly (any warning fails) into site/.
# The test suite runs the same build (tests/test_docs.py), so `make test` covers it.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The HTML report's browser test needs Debian's chromium. Install it when it is missing
# and this is root on a system with apt-get; otherwise, or if that fails, the test skips.
# A failed attempt is remembered in $(VENV)/.no-chromium (delete it to try again).
browser:
	@command -v chromium >/dev/null 2>&1 || test -e $(VENV)/.no-chromium || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing chromium for the browser test (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  { echo "make: could not install chromium; the browser test will skip" >&2; \
	    mkdir -p $(VENV) && touch $(VENV)/.no-chromium; }; \
	else \
	  echo "make: no chromium (not root, or no apt-get); the browser test will skip" >&2; \
	fi

# pytest exits 5 when it collects no test at all: that is a failure, said out loud.
test: lint browser
	@rc=0; $(BIN)/python -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "make test: FAILED, pytest collected no tests (exit 5)" >&2; exit 1; \
	fi; exit $$rc

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_ops.py

clean:
	rm -rf $(VENV) build site src/*.egg-info
