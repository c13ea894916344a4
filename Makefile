# Every target bootstraps itself: a fresh clone needs only Python 3.11, make and a package registry.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=
MODULE ?=
MUTATE_JOBS ?= 2

.PHONY: all demo test soak lint bench mutate clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/omnillm-sim run scenarios/steady.toml

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check omnillm_sim pytest_omnillm tests benchmarks tools
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Mutation testing of the core (not part of `make test`: it takes a while). One module:
# `make mutate MODULE=money`. Report: reports/mutation/report.md (see README, Development).
mutate: $(STAMP)
	nice $(BIN)/python tools/mutate.py -j $(MUTATE_JOBS) $(MODULE)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
