# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/layers/core/python:$(CURDIR)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: run test lint typecheck unit integration infra synth bench system-deps node-deps clean

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

## Debian packages the tests talk to: DCMTK (storescu, findscu, dsrdump, ...), Orthanc, and
## dicom3tools (dciodvfy checks the XDS-I.b manifests against the KOS IOD).
system-deps:
	@if ! command -v /usr/bin/storescu >/dev/null || ! command -v /usr/sbin/Orthanc >/dev/null \
		|| ! command -v /usr/bin/dciodvfy >/dev/null; then \
		echo "installing dcmtk, orthanc and dicom3tools"; \
		$$(command -v sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq dcmtk orthanc dicom3tools iproute2 >/dev/null; \
	fi

## Node packages: the pinned CDK CLI and simple-hl7, the tests' independent HL7 peer.
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json tests/integration/hl7_peer/package.json
	npm ci --no-audit --no-fund --loglevel=error
	cd tests/integration/hl7_peer && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)
node-deps: $(NODE_STAMP)

## Start the whole archive locally: moto, the DICOM listener, the handlers. Ctrl-C stops it; the
## data stays in .local-cloud/aws for the next start. `make run FRESH=1` starts with none.
run: $(STAMP)
	$(PY) -m local $(if $(FRESH),--fresh)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy layers/core/python/archive admin functions listeners local infrastructure app.py bench

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) system-deps node-deps
	$(VENV)/bin/pytest -q tests/integration

infra: $(STAMP)
	$(VENV)/bin/pytest -q tests/infrastructure

## Installs what the tests need, then lint, types and every test: in TEST_SHARDS (default 3)
## pytest processes at once, each in its own network namespace (tests/shards.py says why).
test: $(STAMP) system-deps node-deps lint typecheck
	$(PY) -m tests.shards

synth: $(STAMP)
	$(PY) app.py

bench: $(STAMP) system-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) cdk.out .pytest_cache .mypy_cache .ruff_cache
