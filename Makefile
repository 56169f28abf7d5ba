# One command to run the service, one to run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

WEB := frontend
WEB_SOURCES := $(shell find $(WEB)/src $(WEB)/index.html $(WEB)/vite.config.ts $(WEB)/tsconfig.json -type f 2>/dev/null)

.PHONY: install run test lint clean web web-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps monailabel==0.8.5
	touch $(STAMP)

install: $(STAMP)

# The browser app: npm packages from the lock file, then a Vite build into frontend/dist (served at "/").
$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $@

$(WEB)/dist/index.html: $(WEB)/node_modules/.installed $(WEB_SOURCES)
	cd $(WEB) && npm run build

web: $(WEB)/dist/index.html

web-test: $(WEB)/node_modules/.installed
	cd $(WEB) && npm test

run: install web
	$(BIN)/nextcase serve

lint: install
	$(BIN)/ruff check app worker tests benchmarks
	$(BIN)/mypy app worker

# Two processes, one test file each at a time (--dist loadfile keeps a file's module fixtures in one process).
test: lint web web-test
	$(BIN)/pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules $(WEB)/dist
