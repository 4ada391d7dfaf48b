# make run   - start the gateway on loopback with a demo user and print how to try it
# make test  - install what the tests need (Python venv, Debian servers when root) and run them all
# make image - build the container image with podman, from a local wheelhouse, with no network
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# make image: BASE=<image with python3 and its venv module> (a local one needs no
# registry), IMAGE=<tag>, PODMAN_ULIMITS (--ulimit flags within the host's hard limits,
# for the build and the wheelhouse's look into the base) and PODMAN_BUILD_FLAGS for the
# host (README "Run in a container").
BASE ?= docker.io/library/python:3.11-slim
IMAGE ?= acmegw
PODMAN ?= podman
PODMAN_BUILD_FLAGS ?=
PODMAN_ULIMITS ?=
WHEELHOUSE := wheelhouse

.PHONY: run test lint typecheck unit system-packages bench clean wheelhouse image provider-table

# The commands (acmegw-server, acmegw-passwd, acmegw-hook, acmegw-acme) go to
# $(VENV)/bin: `make run` needs only these; the tests add their own tools.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lexicon,postgresql]'
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

run: $(VENV)/.runtime
	$(PY) -m gateway.demo

# README's "Which provider for my DNS host" table, from the installed dns-lexicon.
provider-table: $(VENV)/.installed
	$(PY) tools/provider_table.py

bench: $(VENV)/.installed
	@for b in bench/*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(PY) "$$b" || exit 1; done

# Every wheel the image needs but its own (built from the sources in the image
# build), and the build backend that builds it, resolved for the base image's own
# python3 (tools/wheelhouse.py asks the base; the only step that may use PyPI).
# The folder is remade only when the requirements or the base's Python change.
wheelhouse: $(VENV)/.runtime
	$(PY) tools/wheelhouse.py --base '$(BASE)' --podman '$(PODMAN)' \
	    --run-flags '$(PODMAN_ULIMITS)' --dest $(WHEELHOUSE)

image: wheelhouse
	$(PODMAN) build --network=none --format docker $(PODMAN_ULIMITS) $(PODMAN_BUILD_FLAGS) \
	    --build-arg BASE=$(BASE) --build-arg WHEELS=$(WHEELHOUSE) -t $(IMAGE) .

clean:
	rm -rf $(VENV) $(WHEELHOUSE) .mypy_cache .ruff_cache .pytest_cache
