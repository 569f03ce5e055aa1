# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/layers/core/python:$(CURDIR)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: run test lint typecheck unit integration infra synth bench system-deps clean

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

## Debian packages the tests talk to: DCMTK (storescu, findscu, ...) and Orthanc.
system-deps:
	@if ! command -v /usr/bin/storescu >/dev/null || ! command -v /usr/sbin/Orthanc >/dev/null; then \
		echo "installing dcmtk and orthanc"; \
		$$(command -v sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq dcmtk orthanc iproute2 >/dev/null; \
	fi

## Start the whole archive locally: moto, the DICOM listener, the handlers. Ctrl-C stops it.
run: $(STAMP)
	$(PY) -m local

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy layers/core/python/archive functions listeners local infrastructure app.py

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) system-deps
	$(VENV)/bin/pytest -q tests/integration

infra: $(STAMP)
	$(VENV)/bin/pytest -q tests/infrastructure

## Installs what the tests need, then lint, types and every test.
test: $(STAMP) system-deps lint typecheck
	$(VENV)/bin/pytest -q -ra

synth: $(STAMP)
	$(PY) app.py

bench: $(STAMP) system-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) cdk.out .pytest_cache .mypy_cache .ruff_cache
