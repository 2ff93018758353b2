# The two commands of the contract are `make demo` and `make test`; the rest are the
# pieces they are built from, handy on their own.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VEHICLES ?= 10
DURATION ?= 60
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo dashboard test lint typecheck pytest aws setup receiver consumer simulate aggregate clean

# Stamp files make re-runs skip installs unless the requirement files changed. The pinned
# set first, then the project itself (editable, so the checkout is what runs) without
# letting pip resolve anything beyond the pins.
$(BIN)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

$(BIN)/.test: $(BIN)/.runtime requirements-test.txt
	$(PIP) -r requirements-test.txt
	touch $@

## demo: the whole pipeline on the embedded AWS, with a summary; non-zero if a reading is lost
demo: $(BIN)/.runtime
	$(BIN)/python scripts/demo.py --vehicles $(VEHICLES) --duration $(DURATION)

## dashboard: the embedded stack with a simulated fleet streaming until Ctrl-C, plus the dashboard on
## http://127.0.0.1:8050 (pages /pipeline, /fleet, /vehicles/<id>); ARGS="--dashboard-port 8051 ..." for more
dashboard: $(BIN)/.runtime
	$(BIN)/python scripts/dashboard.py --vehicles $(VEHICLES) $(ARGS)

## test: lint, type-check, then every test with the coverage gate
test: lint typecheck pytest

lint: $(BIN)/.test
	$(BIN)/ruff check src scripts tests
	$(BIN)/ruff format --check src scripts tests

typecheck: $(BIN)/.test
	$(BIN)/mypy

# Two workers (CI has two cores): the suite waits on the processes it starts about half the
# time, so two run in ~4.5 minutes what one runs in ~7.5. PYTEST_WORKERS=0 runs in one process.
# Tests marked serial (timing-sensitive crash tests, Spark's JVM) run afterwards, alone, and
# the coverage gate applies to both runs together.
PYTEST_WORKERS ?= 2
pytest: $(BIN)/.test
	@command -v java >/dev/null 2>&1 || echo "make test: no Java here (Debian: openjdk-17-jre-headless), so the Spark engine's tests are skipped"
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || echo "make test: no Chromium here (Debian: chromium chromium-driver), so the dashboard's browser tests are skipped"
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not serial" --cov-report= --cov-fail-under=0
	$(BIN)/python -m pytest -m serial --cov-append

## The four terminals, by hand (see README): the embedded AWS first.
aws: $(BIN)/.runtime
	$(BIN)/moto_server -H 127.0.0.1 -p 4566

setup: $(BIN)/.runtime
	$(BIN)/python scripts/setup_sqs.py

receiver: $(BIN)/.runtime
	$(BIN)/uvicorn src.receiver.app:app --port 8000

consumer: $(BIN)/.runtime
	$(BIN)/python -m src.consumer.batch_consumer

simulate: $(BIN)/.runtime
	$(BIN)/python -m src.generator.simulator --vehicles $(VEHICLES) --duration $(DURATION)

aggregate: $(BIN)/.runtime
	$(BIN)/python -m src.aggregator.hourly_stats

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
