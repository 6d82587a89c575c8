# qwen-gateway: every target sets up what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs what serving needs (the project's dependencies only); the dev extras
# (pytest, ruff, mypy ...) come with the targets that use them.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install install-run run test test-long lint format schemas bench clean

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install-run: $(RUN_STAMP)

install: $(STAMP)

run: install-run
	$(BIN)/qwen-gateway serve $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict protocol
	bash scripts/web.sh check

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: install
	$(BIN)/qwen-gateway schemas --out schemas
	bash scripts/web.sh types

test: install lint
	bash scripts/test.sh $(ARGS)

# The long variants: the reliability suite's bigger storm and ten-minute soak, more fuzz cases (QG_TEST_LONG=1).
test-long:
	QG_TEST_LONG=1 $(MAKE) test ARGS='$(ARGS)'

bench: install
	bash scripts/bench.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
