# OpenTAKServer interop (included by the Makefile; README.md "OpenTAKServer (make interop)").
#   make interop   installs once (a Debian trixie root file system in $(INTEROP_DIR) with Python
#                  3.13, PostgreSQL+PostGIS, RabbitMQ and OpenTAKServer $(OTS_VERSION) from PyPI;
#                  ~3 minutes, 1.7 GB), starts them in a private network namespace, runs
#                  tests/interop there and stops everything. Needs root. Not part of `make test`.
#   make interop-clean   removes $(INTEROP_DIR).

INTEROP_DIR ?= $(CURDIR)/.interop
OTS_VERSION ?= 1.7.14
INTEROP_TIMEOUT ?= 1800
INTEROP_TESTS ?= tests/interop

.PHONY: interop interop-clean

interop: $(STAMP)
	INTEROP_DIR=$(INTEROP_DIR) OTS_VERSION=$(OTS_VERSION) PYTEST_ARGS="$(PYTEST_ARGS)" \
		INTEROP_TESTS="$(INTEROP_TESTS)" \
		timeout $(INTEROP_TIMEOUT) scripts/interop/run.sh

interop-clean:
	rm -rf $(INTEROP_DIR)

# lint-shell (lint.mk) checks these scripts too.
SHELL_SCRIPTS += $(wildcard scripts/interop/*.sh)
