# Two commands on a fresh machine: `make run` (the whole local stack) and `make test`.
# Everything installs into .venv (and taky into .venv-taky, on first use); no root, no Docker.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv run test unit integration bench clean

# Cluster targets: build render deploy canary promote rollback status undeploy (see README.md).
include deploy.mk
# Security scanning: ruff (security rules), bandit, waiver reasons, shellcheck (see lint.mk).
include lint.mk
# OpenTAKServer interop: make interop (see interop.mk).
include interop.mk

help:
	@echo "make run     - local stack: Redis, function on :8080, TAK forwarder, taky"
	@echo "make test    - unit tests, then integration tests against real processes"
	@echo "make lint    - ruff (security rules), bandit, waiver reasons, shellcheck"
	@echo "make bench   - loopback benchmarks (ours vs a raw baseline, one run)"
	@echo "make interop - OpenTAKServer in a private namespace, and the tests against it (root)"
	@echo "make build render deploy canary promote rollback status undeploy  (DRY_RUN=1 prints)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,local]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/detection-api up

test: unit integration

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/integration --ignore=tests/interop $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-taky .data .pytest_cache
