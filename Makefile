# Two commands: `make run` and `make test`. Both create .venv when it is missing and install
# exactly the locked dependency set (firmware_scripts/requirements/*-$(uname -m).txt, with hashes);
# nothing is resolved at install time. `make lock` is the one way the lock files change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
REQS := firmware_scripts/requirements
INSTALL_VENV := PYTHON=$(PYTHON) firmware_scripts/install-venv
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint fmt clean-venv models lock soup sbom

# The dev set contains the runtime set: a venv made for the tests also serves `make run`.
$(DEV_STAMP): $(REQS)/dev-$(ARCH).txt pyproject.toml firmware_scripts/install-venv
	$(INSTALL_VENV) $(VENV) dev --editable
	rm -f $(RUNTIME_STAMP)
	touch $@

$(RUNTIME_STAMP): $(REQS)/runtime-$(ARCH).txt pyproject.toml firmware_scripts/install-venv
	$(INSTALL_VENV) $(VENV) runtime --editable
	rm -f $(DEV_STAMP)
	touch $@

run: $(if $(wildcard $(DEV_STAMP)),$(DEV_STAMP),$(RUNTIME_STAMP))
	$(BIN)/appliance serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Re-resolve the lock files for Python 3.11 on x86_64 and aarch64 (manylinux wheels only).
# Versions already locked are kept; `make lock UPGRADE="numpy pillow"` moves the named packages,
# `make lock UPGRADE=all` everything. Then docs/soup.md is regenerated. README "Dependencies"
# says what to re-measure after a change.
UV_COMPILE = $(BIN)/uv pip compile --quiet --python-version 3.11 --only-binary :all: \
	--generate-hashes --custom-compile-command "make lock" -c $(REQS)/constraints.in \
	$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))
lock: $(DEV_STAMP)
	set -e; for arch in x86_64 aarch64; do \
	  platform="--python-platform $$arch-manylinux_2_28"; \
	  $(UV_COMPILE) $$platform pyproject.toml $(REQS)/build.in -o $(REQS)/runtime-$$arch.txt; \
	  $(UV_COMPILE) $$platform pyproject.toml $(REQS)/build.in --extra dev \
	    -c $(REQS)/runtime-$$arch.txt -o $(REQS)/dev-$$arch.txt; \
	done
	$(UV_COMPILE) --python-platform x86_64-manylinux_2_28 pyproject.toml $(REQS)/build.in \
	  --extra gpu --no-emit-package onnxruntime -c $(REQS)/runtime-x86_64.txt -o $(REQS)/gpu-x86_64.txt
	$(MAKE) soup

# The SOUP list (IEC 62304 5.3.3) from the lock and the installed packages' metadata.
soup: $(DEV_STAMP)
	$(BIN)/python $(REQS)/soup.py write

# A CycloneDX SBOM of exactly what a device installs: the runtime lock in a throwaway venv.
sbom: $(DEV_STAMP)
	rm -rf build/sbom-venv
	$(INSTALL_VENV) build/sbom-venv runtime
	$(BIN)/cyclonedx-py environment build/sbom-venv --pyproject pyproject.toml \
	  --output-reproducible -o build/sbom.cdx.json
	$(BIN)/python $(REQS)/soup.py sbom build/sbom.cdx.json

# Regenerate training data, retrain, export, quantize and validate every shipped model (CPU).
# Training tools are not part of the appliance: they go into a venv of their own (the locked dev
# set plus the `train` extra), so .venv stays exactly the lock. The OCT fluid model is trained into
# models/candidates/, measured on its held-out seeds beside the classical detector, and copied
# into models/ only if the install rule stated in models/recipe/oct_compare.py holds.
models:
	$(INSTALL_VENV) build/train-venv dev --editable
	build/train-venv/bin/python -m pip install --quiet -e '.[train]'
	build/train-venv/bin/python models/recipe/build.py
	build/train-venv/bin/python models/recipe/oct.py
	build/train-venv/bin/python models/recipe/oct_compare.py
	build/train-venv/bin/python models/recipe/oct_compare.py --decide

fmt: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
