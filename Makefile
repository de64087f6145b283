# The two commands of the README are `make demo` and `make test`; everything else is setup.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR := $(or $(STREAM_ASSETS_HOME),$(CURDIR)/.stream_assets)
export DAGSTER_HOME := $(HOME_DIR)/dagster

.PHONY: setup demo test lint bench bench-s3 bench-materialize bench-soak clean

# Re-installs only when pyproject.toml changes; jars re-resolve only when a pom changes.
$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@command -v java >/dev/null || { echo "error: java not found; install a Java 17 JDK (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found; install Maven (apt-get install maven)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed
	$(BIN)/stream-assets setup

demo: setup
	scripts/demo.sh

test: setup
	scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python bench/ingest.py

# The same with the lake on the test S3 server (moto on loopback), against plain PySpark on it.
bench-s3: setup
	$(BIN)/python bench/ingest.py --lake s3

# The demo's "Materialize all" in a fresh process, against a plain script (docs/benchmarks.md).
bench-materialize: setup
	$(BIN)/python bench/materialize_all.py

# An hour of the continuous job and maintenance on every demo table (docs/benchmarks.md,
# "Soak"); its chart needs the bench extra's matplotlib. SOAK_ARGS="--minutes 10" shortens it.
bench-soak: setup
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	-$(BIN)/stream-assets kafka stop
	rm -rf $(HOME_DIR)
