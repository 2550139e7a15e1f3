# Static checks (included by the Makefile). `make lint` runs, and fails on the first finding of:
#   lint-ruff     ruff check with the pyproject rules (E, F, B, S = flake8-bandit's security
#                 rules, ...) and ruff format --check, over functions, tests, bench
#   lint-bandit   bandit over the shipped code (functions/), every severity and confidence
#   lint-waivers  every security waiver says why on its own line: `# noqa: S310 (reason)`,
#                 `# nosec B310 (reason)`; a bare code is refused
#   lint-shell    shellcheck of scripts/ and the scripts shipped to the cluster, when installed
# The dynamic side (DAST) is the schemathesis run against the running function; dependency
# audits: README.md "Security scanning".

BIN        ?= .venv/bin
LINT_PATHS ?= functions tests bench
# Code that ships in the image. bench/ and tests/ are covered by ruff's S rules (pyproject
# relaxes them there on purpose: they start processes and use fixed test secrets).
BANDIT_PATHS ?= functions
# B101 (assert): the same policy as ruff's S101, ignored in pyproject.toml: asserts state
# invariants of our own code, never validate input (pydantic and explicit checks do that).
BANDIT_SKIP ?= B101
WAIVER_PATHS ?= functions tests bench scripts
SHELL_SCRIPTS ?= $(wildcard scripts/*.sh) $(wildcard knative/components/*/*.sh)

# A waiver line: `noqa` with at least one S code, or `nosec`, followed by nothing but the codes.
UNEXPLAINED_WAIVER := \#[[:space:]]*(noqa:[[:space:]]*([A-Z]+[0-9]+[[:space:]]*,?[[:space:]]*)*S[0-9]+([[:space:]]*,?[[:space:]]*[A-Z]+[0-9]+)*|nosec([[:space:]]*B[0-9]+([[:space:]]*,[[:space:]]*B[0-9]+)*)?)[[:space:]]*$$

.PHONY: lint lint-ruff lint-bandit lint-waivers lint-shell

lint: lint-ruff lint-bandit lint-waivers lint-shell

lint-ruff: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

lint-bandit: $(STAMP)
	$(BIN)/bandit --quiet --recursive --skip $(BANDIT_SKIP) --severity-level all \
		--confidence-level all $(BANDIT_PATHS)

lint-waivers:
	@found="$$(grep -rnHE --include='*.py' '$(UNEXPLAINED_WAIVER)' $(WAIVER_PATHS) || true)"; \
	if [ -n "$$found" ]; then \
		echo "security waivers without a reason (write it on the same line, after the codes):"; \
		echo "$$found"; \
		exit 1; \
	fi

lint-shell:
	@if command -v shellcheck >/dev/null; then \
		echo "shellcheck $(SHELL_SCRIPTS)"; shellcheck $(SHELL_SCRIPTS); \
	else \
		echo "lint-shell: shellcheck not installed (apt-get install shellcheck): skipped"; \
	fi
