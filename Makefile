# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
STAMP := $(VENV)/.installed
# One pytest worker per core: a third on two cores starved the fakes that live in the
# test processes (the 10,000-user presence test's identity platform among them).
PYTEST_WORKERS ?= auto

.PHONY: run test test-sqlite test-fast demo lint clean image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the gateway on the embedded SQLite default (data in ./data).
run: $(STAMP)
	$(BIN)/cloudlink-gateway serve --host $(HOST) --port $(PORT)

## The gateway with fake Twilio and CloudLink: a WhatsApp message in, a reply out, its status back.
demo: $(STAMP)
	$(BIN)/python -m demo

## Lint, type-check, then every test on SQLite and on a throwaway PostgreSQL, spread over
## the machine's cores (PYTEST_WORKERS=0 runs them in this one process); the PostgreSQL tests
## run one after another on one worker (see tests/conftest.py). The throwaway
## cluster lives in a temporary directory (-t), so an interrupted run leaves nothing behind
## that stops the next one.
test: lint
	@command -v pg_virtualenv >/dev/null || { \
	  echo "pg_virtualenv not found: install PostgreSQL (Debian: apt-get install postgresql)"; \
	  exit 1; }
	@command -v promtool >/dev/null || { \
	  echo "promtool not found: install Prometheus (Debian: apt-get install prometheus)"; \
	  exit 1; }
	@command -v chromium >/dev/null || { \
	  echo "chromium not found: the console's browser tests need it (Debian: apt-get install chromium)"; \
	  exit 1; }
	GATEWAY_TEST_REQUIRE_POSTGRES=1 GATEWAY_TEST_REQUIRE_PROMTOOL=1 GATEWAY_TEST_REQUIRE_CHROMIUM=1 pg_virtualenv -t $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

## Every test on SQLite only (the PostgreSQL variants are not collected).
test-sqlite: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

## The edit loop: SQLite only, the slow tests (processes, scale, conformance runs) left out.
test-fast: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check gateway storage observability tests bench demo
	$(BIN)/ruff format --check gateway storage observability tests bench demo
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## The production image from Containerfile, built and checked here (as root: lint, build,
## then run its entry point on a read-only root filesystem); tagged cloudlink-gateway:VERSION.
image:
	bash .ci/image
