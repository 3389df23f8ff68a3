# The two commands the README starts with are `make demo` and `make test`; both set everything up.
VENV := .venv
BIN := $(VENV)/bin
SOAK_SECONDS ?= 300

.PHONY: setup demo test lint bench soak clean

setup:
	@./scripts/bootstrap.sh

demo: setup
	$(BIN)/pidns demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

# The churn soak at full length (the test suite runs it for 60 s).
soak: setup
	PIDNS_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest tests/soak -q

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
