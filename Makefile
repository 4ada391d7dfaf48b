# make run   - start the gateway on loopback with a demo user and print how to try it
# make test  - install what the tests need (Python venv, Debian servers when root) and run them all
# make image - build the container image with podman, from a local wheelhouse, with no network
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# make image: BASE=<image with python3 and its venv module> (a local one needs no
# registry), IMAGE=<tag>, PODMAN_BUILD_FLAGS for the host (README "Run in a container").
BASE ?= docker.io/library/python:3.11-slim
IMAGE ?= acmegw
PODMAN ?= podman
PODMAN_BUILD_FLAGS ?=
WHEELHOUSE := wheelhouse
# The image's extras come from the Containerfile's `ARG EXTRAS=` line alone.
IMAGE_EXTRAS := $(strip $(shell sed -n 's/^ARG EXTRAS=//p' Containerfile))
IMAGE_REQUIREMENT := .$(if $(IMAGE_EXTRAS),[$(IMAGE_EXTRAS)])

.PHONY: run test lint typecheck unit system-packages bench clean wheelhouse image provider-table

# The commands (acmegw-server, acmegw-passwd, acmegw-hook, acmegw-acme) go to
# $(VENV)/bin: `make run` needs only these; the tests add their own tools.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lexicon]'
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
# build), and the build backend that builds it, made by the venv's pip (the
# only step that may use PyPI; its cache helps) for the venv's Python, which
# must be the base image's minor version (another: VENV=.venv3X PYTHON=python3.X).
wheelhouse: $(WHEELHOUSE)/.complete

$(WHEELHOUSE)/.complete: pyproject.toml Containerfile $(VENV)/.runtime
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip wheel -q --disable-pip-version-check --wheel-dir $(WHEELHOUSE) \
	    '$(IMAGE_REQUIREMENT)' $$($(PY) -c 'import tomllib; \
	    print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')
	rm -f $(WHEELHOUSE)/acme_dns01_gateway-*.whl
	touch $@

image: wheelhouse
	$(PODMAN) build --network=none --format docker $(PODMAN_BUILD_FLAGS) \
	    --build-arg BASE=$(BASE) --build-arg WHEELS=$(WHEELHOUSE) -t $(IMAGE) .

clean:
	rm -rf $(VENV) $(WHEELHOUSE) .mypy_cache .ruff_cache .pytest_cache
