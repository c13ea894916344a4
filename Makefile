# Every target bootstraps itself: a fresh clone needs only Python 3.11, make and a package registry.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=
MODULE ?=
MUTATE_JOBS ?= 2

# Older SDKs and HTTP mocking libraries (issue 10): openai 2.x and anthropic 0.x on httpx,
# vcrpy 7 (patches Client._send_single_request), respx, pytest-httpx. `make test` covers the
# latest ones (openai 3, anthropic 2 on httpx2, vcrpy 9). aiohttp < 3.14 for aioresponses (which
# cannot build a response on aiohttp 3.14), httpx-aiohttp for openai 2's DefaultAioHttpClient.
COMPAT       := .venv-compat-legacy
COMPAT_PINS  := "openai>=2,<3" "anthropic<1" "vcrpy>=7,<8" httpx httpx2 respx pytest-httpx \
                pytest pytest-xdist "aiohttp<3.14" aioresponses httpx-aiohttp
COMPAT_TESTS := tests/plugin/test_plugin_sdks.py tests/plugin/test_plugin_plumbing.py \
                tests/plugin/test_plugin_runs.py tests/plugin/test_plugin_aiohttp.py

.PHONY: all demo test test-compat soak lint bench mutate clean

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

$(COMPAT)/.installed-stamp: pyproject.toml Makefile
	@test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT)/bin/python -m pip install --quiet -e . $(COMPAT_PINS)
	@touch $@

test-compat: $(COMPAT)/.installed-stamp
	$(COMPAT)/bin/python -m pytest -n 2 -q -p no:cacheprovider $(COMPAT_TESTS) $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(COMPAT) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
