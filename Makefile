# One command to run the service, one to run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps monailabel==0.8.5
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/nextcase serve

lint: install
	$(BIN)/ruff check app worker tests benchmarks
	$(BIN)/mypy app worker

# Two processes, one test file each at a time (--dist loadfile keeps a file's module fixtures in one process).
test: lint
	$(BIN)/pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
