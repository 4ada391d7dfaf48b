# make run  - start the gateway on loopback with a demo user and print how to try it
# make test - install what the tests need (Python venv, Debian servers when root) and run them all
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint typecheck unit system-packages bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

system-packages:
	@./.ci/install-system-packages

lint: $(VENV)/.installed
	$(PY) -m ruff check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy

test: $(VENV)/.installed system-packages lint typecheck
	$(PY) -m pytest -p no:cacheprovider -ra

unit: $(VENV)/.installed
	$(PY) -m pytest -p no:cacheprovider -q -m "not system"

run: $(VENV)/.installed
	$(PY) -m gateway.demo

bench: $(VENV)/.installed
	@for b in bench/*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(PY) "$$b" || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
