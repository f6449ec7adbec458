# Every target installs what it needs, idempotently: Debian packages (as root),
# a virtual environment, wheels. A second run finds everything in place.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages the harness drives: the image builder, the container runtime
# and its network plugins, the front door's httpd, the tools of the node.
DEB_PACKAGES := buildah containerd runc containernetworking-plugins apache2 \
	debootstrap catatonit iptables iproute2 conntrack socat wrk fuse-overlayfs \
	chromium

.PHONY: help system venv test experiments images binaries lint format bench clean

help:
	@echo "make experiments  run the experiments on a cluster and write the report"
	@echo "make test         run the project's tests (installs what they need)"
	@echo "make images       build the container images into the cache"
	@echo "make binaries     build the Kubernetes, etcd and CoreDNS binaries into the cache"
	@echo "make lint         ruff and mypy"
	@echo "make bench        the benchmarks under benchmarks/"

system:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make: missing Debian packages:$$missing; install them as root (sudo make system)" >&2; \
	  exit 1; \
	fi; \
	echo "installing Debian packages:$$missing"; \
	apt-get update -q; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

$(BIN)/.installed: pyproject.toml services/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11+" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -r services/requirements.txt
	@touch $@

venv: $(BIN)/.installed

images: system venv
	$(BIN)/harness images build

# Kubernetes, etcd and CoreDNS, built with the machine's Go into the cache.
binaries: venv
	$(BIN)/python -m harness.binaries

# The project's tests, then the experiments on the embedded cluster; both build
# what they need (images, binaries) through the harness's caches.
test: system venv binaries
	$(BIN)/pytest tests
	$(BIN)/pytest experiments --junitxml=reports/junit.xml

experiments: system venv binaries
	$(BIN)/harness images build
	$(BIN)/pytest experiments --junitxml=reports/junit.xml

lint: venv
	$(BIN)/ruff check harness services tests benchmarks experiments
	$(BIN)/ruff format --check harness services tests benchmarks experiments
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format harness services tests benchmarks experiments
	$(BIN)/ruff check --fix harness services tests benchmarks experiments

bench: system venv
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_binaries.py
	$(BIN)/python benchmarks/bench_cluster.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
