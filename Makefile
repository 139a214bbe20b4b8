# Everything a newcomer needs: `make test` runs the whole suite (end-to-end
# Meltano pipelines included), `make demo` runs the pipelines end to end on a
# local sandbox. Both build .venv and install the Meltano plugins first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS_STAMP := .meltano/.plugins-installed

# No network at run time but PyPI: Meltano must not phone home.
export MELTANO_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: install plugins test test-fast lint format bench sandbox demo docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# The plugin venvs of meltano.yml, in .meltano/ (uv backend, PyPI only), then compiled to bytecode,
# each by its own Python: where PYTHONDONTWRITEBYTECODE is set, every plugin process would otherwise
# compile all it imports again (half of its start-up).
plugins: $(PLUGINS_STAMP)

$(PLUGINS_STAMP): $(STAMP) meltano.yml pyproject.toml
	$(BIN)/meltano install
	for venv in .meltano/extractors/*/venv .meltano/loaders/*/venv; do \
		$$venv/bin/python -m compileall -q -j 0 $$venv/lib > /dev/null; done
	touch $(PLUGINS_STAMP)

# The suite spread over TEST_WORKERS processes (pytest-xdist): one test's waits overlap another's work.
# Our packages are compiled to bytecode first, once, instead of in each of the ~200 processes the tests start.
TEST_WORKERS ?= 2
COMPILE := $(BIN)/python -m compileall -q closum_api tap_closum target_closum closum_sandbox > /dev/null

test: $(PLUGINS_STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The quick loop: everything but the end-to-end Meltano pipelines (no plugins needed).
test-fast: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(PLUGINS_STAMP)
	$(BIN)/python demo/run_demo.py

# Refresh the blocks of README.md, docs/tap.md, docs/target.md and meltano.yml generated from the code.
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tap.py
	$(BIN)/python benchmarks/bench_target.py
	$(BIN)/python benchmarks/bench_match.py
	$(BIN)/python benchmarks/bench_faults.py

sandbox: $(STAMP)
	$(BIN)/closum-sandbox serve --port 8080 --seed 25

clean:
	rm -rf $(VENV) .meltano .pytest_cache .mypy_cache .ruff_cache dist build
	find output -mindepth 1 ! -name .gitignore -exec rm -rf {} +
