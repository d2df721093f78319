# oomguard: `make demo` runs the bundled example sweep; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m oomguard.demo

# Two test processes (the system tests, which measure real kills, one after another on one
# of them); each test is named as it ends, the slowest are listed at the end.
test: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -n 2 --dist loadgroup -v --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --n 10000 100000

clean:
	rm -rf $(VENV) demo-out
