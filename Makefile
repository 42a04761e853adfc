# inferno — developer entry points. `make demo` and `make test` work on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TSTAMP  := $(VENV)/.installed-test

.PHONY: install install-test demo test lint bench prometheus kubectl clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The core plus both worlds (the controller image installs the `live` extra only).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]'
	touch $@

$(TSTAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

install-test: $(TSTAMP) prometheus kubectl

# The live tests run a real Prometheus server (Debian package) on loopback.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian package prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; \
	  systemctl stop prometheus >/dev/null 2>&1 || true; \
	  pkill -x prometheus >/dev/null 2>&1 || true; }

# The manifest tests render yamls/deploy with `kubectl kustomize` (kustomize v5 inside
# kubectl >= 1.27); Debian's kubernetes-client is too old for it.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "kubectl >= 1.27 not found: tests/live/test_live_manifests.py needs it"; exit 1; }

demo: $(STAMP)
	$(BIN)/inferno sim run scenarios/quickstart.yaml

test: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(TSTAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/optimizer_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
