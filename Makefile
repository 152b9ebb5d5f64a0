# mistral-operator: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
TOPOLOGY ?= h200
SHAPE ?= compact
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements-dev.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create the virtual environment from the lock file

.PHONY: lock
lock: ## re-resolve the hashed lock files from pyproject.toml (needs uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --no-header -o requirements.lock
	uv pip compile pyproject.toml --group dev --generate-hashes --python-version 3.11 --no-header -o requirements-dev.lock

.PHONY: binaries
binaries: ## build and cache the pinned control-plane binaries, kwok and helm
	hack/build-binaries.sh

.PHONY: cluster-up
cluster-up: venv ## start (or reuse) the local cluster; TOPOLOGY=h200|h100|b200
	hack/cluster-up.sh $(TOPOLOGY)

.PHONY: cluster-down
cluster-down: ## stop the local cluster and remove its state
	hack/cluster-down.sh

.PHONY: lint
lint: venv ## ruff (lint and format check), mypy --strict, and the CRD up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m mistral_operator.api.crdgen --check
	$(PY) -m mistral_operator.api.crdgen --check --output-dir charts/mistral-operator/files/crds

.PHONY: crds
crds: venv ## regenerate crds/ (and the chart's copy) from the pydantic API models
	$(PY) -m mistral_operator.api.crdgen
	$(PY) -m mistral_operator.api.crdgen --output-dir charts/mistral-operator/files/crds

.PHONY: sizing
sizing: venv ## planned Compact replica shapes per profile, GPU and precision (SIZING_ARGS=--format json)
	$(PY) -m mistral_operator.cli sizing $(SIZING_ARGS)

.PHONY: sizing-docs
sizing-docs: venv ## rewrite the sizing table in docs/sizing.md from the planner
	$(PY) -m mistral_operator.cli sizing --write-docs docs/sizing.md

.PHONY: sglang-snapshot
sglang-snapshot: venv ## re-take the snapshot of SGLang's real argument parser (needs PyPI)
	$(PY) hack/snapshot-sglang-args.py --version 0.5.23

.PHONY: fmt
fmt: venv ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: bench
bench: venv binaries ## every benchmark, one table (build/bench/results.json): convergence, API, fleet, autoscaler, cache fill; BENCH_ARGS=--quick
	@was_up=0; [ -n "$$(hack/cluster-status.sh --quiet 2>/dev/null)" ] && was_up=1; \
	status=0; TOPOLOGY=$(TOPOLOGY) $(PY) -m tests.bench.report $(BENCH_ARGS) || status=$$?; \
	if [ $$was_up = 0 ]; then hack/cluster-down.sh; fi; \
	exit $$status

.PHONY: unit
unit: venv ## unit tests only (no cluster)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# The whole suite on the local cluster; the cluster it started is stopped at the end.
.PHONY: test
test: venv binaries ## all tests: unit, integration and e2e on the local cluster
	@was_up=0; [ -n "$$(hack/cluster-status.sh --quiet 2>/dev/null)" ] && was_up=1; \
	status=0; TOPOLOGY=$(TOPOLOGY) $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$was_up = 0 ]; then hack/cluster-down.sh; fi; \
	exit $$status

.PHONY: chaos
chaos: venv binaries ## the reliability suite at full size: 20 random operator kills, 50 quick edits, a failover, 25% of nodes lost, an API server restart (CHAOS_SEED=n repeats a run)
	@was_up=0; [ -n "$$(hack/cluster-status.sh --quiet 2>/dev/null)" ] && was_up=1; \
	status=0; CHAOS_KILLS=20 TOPOLOGY=$(TOPOLOGY) $(PY) -m pytest -s tests/integration/test_chaos.py tests/integration/test_chaos_cluster.py || status=$$?; \
	if [ $$was_up = 0 ]; then hack/cluster-down.sh; fi; \
	exit $$status

.PHONY: fuzz
fuzz: venv binaries ## admission parity at full size: 3000 fuzzed specs through server-side dry run, the API models and the planner (FUZZ_SEED=n repeats a run)
	@was_up=0; [ -n "$$(hack/cluster-status.sh --quiet 2>/dev/null)" ] && was_up=1; \
	status=0; FUZZ_ADMISSION_SPECS=$${FUZZ_ADMISSION_SPECS:-3000} TOPOLOGY=$(TOPOLOGY) $(PY) -m pytest -s tests/integration/test_fuzz_admission.py || status=$$?; \
	if [ $$was_up = 0 ]; then hack/cluster-down.sh; fi; \
	exit $$status

.PHONY: image
image: venv ## the operator image from Debian packages and the lock: dist/oci and a docker-archive (needs root)
	PY=$(PY) hack/build-image.sh

.PHONY: demo
demo: venv ## local cluster + chart + operator + the quick start, served and Ready; SHAPE=compact|multinode
	SHAPE=$(SHAPE) hack/demo.sh

.PHONY: demo-load
demo-load: venv ## with `make demo` up: turn on autoscaling, send a burst, print queue and groups as it scales
	hack/demo-load.sh

.PHONY: demo-down
demo-down: ## stop the demo's operator and the local cluster
	hack/demo-down.sh
