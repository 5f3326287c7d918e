# make train: train the README's default config (t5_tiny on the embedded corpus) into ./workdir.
# make test:  lint + the whole test suite. Both create .venv on first use: `make train` installs lmx's runtime
# dependencies only, `make test` adds the test extra (pytest, ruff, torch and transformers for the golden tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/t5_tiny.py
WORKDIR ?= workdir
ARGS ?=

# glibc's malloc asks for transparent huge pages: XLA:CPU maps its step temporaries afresh every step, and faulting
# them in 2 MiB at a time instead of 4 KiB made the t5_small CPU step 5-14% faster (BENCHMARKS.md). Harmless elsewhere.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: train test lint format bench clean

# Two stamps: the runtime install, and the test extra on top of it.
$(BIN)/.installed-runtime: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed-runtime
	$(BIN)/pip install -e '.[test]'
	touch $@

train: $(BIN)/.installed-runtime
	$(BIN)/python -m lmx.train --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

format: $(BIN)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/.installed-runtime
	$(BIN)/python -m lmx.bench --config=$(CONFIG) $(ARGS)

clean:
	rm -rf $(VENV) $(WORKDIR)
