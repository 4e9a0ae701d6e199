# Two commands set everything up on a fresh clone: `make test` and `make demo`.
# Each target installs what it needs (the Python venv; firebase-tools from npm only where the
# Google Cloud CLI is missing), then runs inside `python -m devtools.emulators`, which starts the
# Firestore and Pub/Sub emulators on free ports, exports their hosts and stops them afterwards.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python

VENV_STAMP := $(VENV)/.requirements.stamp
NODE_STAMP := node_modules/.package-lock.stamp

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k reservations -x"`.
PYTEST_ARGS ?=
PYTEST := $(PY) -m pytest

# The one emulator launcher (devtools/emulators.py); it exits with the command's status. Without
# the Google Cloud CLI it hands the command to firebase-tools (`node_modules`), which downloads
# the emulators: EMULATOR_DEPS installs firebase-tools only then.
IN_EMULATORS := $(PY) -m devtools.emulators --
EMULATOR_DEPS := $(VENV_STAMP) $(if $(shell command -v gcloud),,$(NODE_STAMP))
EMULATOR_HINT := { status=$$?; echo "==> failed (exit $$status); an emulator that could not start\
 says why above" >&2; exit $$status; }

.PHONY: help venv node_modules emulators-setup test test-fast demo dev lint bench clean distclean chaos \
	fuzz coverage

help:
	@echo "make test        whole suite inside the Firestore and Pub/Sub emulators (sets up all)"
	@echo "make test-fast   unit tests only, no emulators"
	@echo "make fuzz        the intake property test with 20,000 generated deliveries (FUZZ=N)"
	@echo "make demo        the demo inside the emulators"
	@echo "make dev         the service on the emulators until Ctrl-C (for the command line)"
	@echo "make lint        ruff and mypy --strict"
	@echo "make coverage    line and branch coverage of execution/ (unit and emulator tiers)"
	@echo "make clean       remove generated files and caches (distclean: also venv, node_modules)"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@echo "==> installing Python dependencies into $(VENV)"
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# The `trade-exec` console script (pyproject's [project.scripts]), on the venv's PATH.
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	@echo "==> installing firebase-tools (npm ci)"
	@npm ci --no-audit --no-fund --no-update-notifier --loglevel=error
	@touch $@

# Says which way the emulators will start, or what is missing and how to get it.
emulators-setup: $(VENV_STAMP)
	@$(PY) -m devtools.emulators --check

test: $(EMULATOR_DEPS)
	@echo "==> running the test suite inside the Firestore and Pub/Sub emulators"
	@$(IN_EMULATORS) "$(PYTEST) $(PYTEST_ARGS)" || $(EMULATOR_HINT)

# A larger chaos run than the one `make test` includes: `make chaos N=1000` (intents; zombie
# storms, outages and kills grow with N and run one at a time, so N=1000 takes several minutes);
# `SEED=<seed>` (or CHAOS_SEED in the environment) replays the run that printed it.
N ?= 200
CHAOS_ENV = CHAOS_N=$(N)$(if $(SEED), CHAOS_SEED=$(SEED))
chaos: $(EMULATOR_DEPS)
	@echo "==> chaos suite ($(N) intents) inside the Firestore and Pub/Sub emulators"
	@$(IN_EMULATORS) "$(CHAOS_ENV) $(PYTEST) tests/chaos $(PYTEST_ARGS)" || $(EMULATOR_HINT)

# The deterministic simulation (README "Tests"): `make simulate SEEDS=100000` plays seeds 0..N-1
# (FIRST=s to start elsewhere), one line of output; `make simulate SEED=s` replays one seed and
# prints its whole trace. No emulators: the real service on the simulated store and broker.
SEEDS ?= 1000
.PHONY: simulate
simulate: $(VENV_STAMP)
	@echo "==> deterministic simulation"
	@$(PY) -m tests.simulation.run $(if $(SEED),--seed $(SEED),--seeds $(SEEDS)$(if $(FIRST), --first $(FIRST)))

# The intake property test (tests/emulator/test_intake_properties.py) with a large run: `make fuzz`
# tries FUZZ deliveries (default 20,000; `make test` tries 500). Failing examples are kept in
# .hypothesis/ (git-ignored) and replayed first by the next run.
FUZZ ?= 20000
FUZZ_TESTS := tests/emulator/test_intake_properties.py
fuzz: $(EMULATOR_DEPS)
	@echo "==> intake property test ($(FUZZ) deliveries) inside the Firestore emulator"
	@$(IN_EMULATORS) "FUZZ_EXAMPLES=$(FUZZ) $(PYTEST) $(FUZZ_TESTS) $(PYTEST_ARGS)" || $(EMULATOR_HINT)

test-fast: $(VENV_STAMP)
	@echo "==> running the unit tests"
	@$(PYTEST) tests/unit $(PYTEST_ARGS)

# The service on the emulators until Ctrl-C, for the command line (README: "Command line").
dev: $(EMULATOR_DEPS)
	@echo "==> starting the emulators and a local execute_intent (Ctrl-C stops everything)"
	@$(IN_EMULATORS) "exec $(PY) -m devtools.stack" || $(EMULATOR_HINT)

demo: $(EMULATOR_DEPS)
	@echo "==> running the demo inside the Firestore and Pub/Sub emulators"
	@$(IN_EMULATORS) "$(PY) -m devtools.demo" || $(EMULATOR_HINT)

# `make bench`: every figure of docs/BENCHMARKS.md in one run inside the emulators (a few
# minutes); rewrites docs/BENCHMARKS.md and docs/bench.png. BENCH_ARGS=--quick for a shorter run.
BENCH_STAMP := $(VENV)/.bench-requirements.stamp
BENCH_ARGS ?=

$(BENCH_STAMP): requirements-bench.txt $(VENV_STAMP)
	@echo "==> installing the benchmark's plotting dependency into $(VENV)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@touch $@

bench: $(EMULATOR_DEPS) $(BENCH_STAMP)
	@echo "==> measuring inside the Firestore and Pub/Sub emulators (a few minutes)"
	@$(IN_EMULATORS) "$(PY) -m bench.run $(BENCH_ARGS)" || $(EMULATOR_HINT)

# mypy checks bench/ too, whose report imports matplotlib (typed): lint installs it.
lint: $(VENV_STAMP) $(BENCH_STAMP)
	@echo "==> ruff"
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@echo "==> mypy --strict"
	@$(VENV)/bin/mypy

# Line and branch coverage of execution/ over the unit and emulator tiers (README "Tests").
# No threshold: the figure is reported, not enforced. Tracing slows every test, so the per-test
# timeout (pyproject: 120 s) is raised for this run only.
COVERAGE_TIERS := tests/unit tests/emulator
coverage: $(EMULATOR_DEPS)
	@echo "==> coverage of execution/ (unit and emulator tiers) inside the emulators"
	@$(PY) -m coverage erase
	@$(IN_EMULATORS) "$(PY) -m coverage run --branch --source=execution -m pytest \
		-o timeout=600 $(COVERAGE_TIERS) $(PYTEST_ARGS)" || $(EMULATOR_HINT)
	@$(PY) -m coverage report --skip-empty --sort=cover

# Generated files and caches; `distclean` also removes the installed venv and node_modules.
clean:
	rm -rf .emulators .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
	rm -f firebase-debug.log firestore-debug.log pubsub-debug.log
	find . \( -path ./$(VENV) -o -path ./node_modules \) -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) node_modules
