# Everything a newcomer needs: `make test` runs the whole suite, `make demo`
# runs the pipelines end to end on a local sandbox. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test bench sandbox clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tap.py
	$(BIN)/python benchmarks/bench_target.py

sandbox: $(STAMP)
	$(BIN)/closum-sandbox serve --port 8080 --seed 25

clean:
	rm -rf $(VENV) .pytest_cache dist build
