# Two entry points for a fresh machine (see README): `make quickstart` and `make test`.
# Both create .venv, install the package into it, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install quickstart test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: where the machine keeps the 2.13.0 CPU wheel on disk pip takes it from there,
	# instead of resolving a bare `torch` to a multi-GB CUDA build. Any other 2.x works if the pin is unavailable.
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.4,<3"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/hf-pretrain quickstart

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_mlm_step.py
