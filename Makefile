# qwen-gateway: every target sets up what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test test-long lint format schemas bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
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
