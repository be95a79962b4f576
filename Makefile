# `make test` and `make demo` work from a fresh clone: the first run creates .venv and installs edgeml.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.edgeml-installed
EXTRAS ?= dev,export,cure,tvm,lls,ray
SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
# Debian packages used by the build, tests and benchmarks (installed when we are root and apt-get exists);
# libeigen3-dev / libgemmlowp-dev: the LLS engine's float and int8 GEMM kernels (header-only; the build stops with a
# message naming the package when one is absent).
SYSTEM_PACKAGES ?= libeigen3-dev libgemmlowp-dev dataset-fashion-mnist ffmpeg-doc libavcodec-dev libavformat-dev libavutil-dev pkg-config chromium chromium-driver g++-aarch64-linux-gnu qemu-user

.PHONY: test test-random demo build system-deps lint clean cross-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build. The Debian packages come first
# (order-only: they must be there before CMake runs, without forcing a reinstall on every make).
$(STAMP): $(PY) $(SOURCES) | system-deps
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
	$(PIP) install -q --no-build-isolation -e ".[$(EXTRAS)]"
	# Only for the CLIP BPE vocabulary file it ships (edgeml.cure.embed reads it without importing open_clip,
	# whose torchvision dependency would pull a CUDA torch): hence --no-deps.
	$(PIP) install -q --no-deps open-clip-torch
	touch $(STAMP)

build: $(STAMP)

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; tests that need them say so"; fi; \
	else echo "not root or no apt-get: skipping Debian packages ($(SYSTEM_PACKAGES))"; fi

test: system-deps $(STAMP)
	$(PY) -m pytest

# The same suite in a shuffled order (a new seed each run; rerun one: pytest -p randomly --randomly-seed=N).
test-random: system-deps $(STAMP)
	$(PY) -m pytest -p randomly

demo: system-deps $(STAMP)
	$(VENV)/bin/edgeml info
	@if $(VENV)/bin/edgeml demo --help >/dev/null 2>&1; then $(VENV)/bin/edgeml demo; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeml tests benchmarks

clean:
	rm -rf build $(VENV) .pytest_cache

# Cross-build the LLS engine for aarch64 and run its C++ tests under qemu (needs g++-aarch64-linux-gnu, qemu-user).
cross-test:
	csrc/lls/cross_test.sh
