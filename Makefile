# Two commands set everything up on a fresh machine:
#   make demo   - install wfcore in .venv and run the demo workflow on the embedded store
#   make test   - install wfcore, its plugins and the test tools, then run every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := plugins/wfe_kafka plugins/wfe_openai plugins/wfe_flaskui

.PHONY: demo test install install-dev chromium lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# -qq: setuptools explains editable installs at length on every install; errors still show.
install: $(BIN)/python
	$(BIN)/pip install -qq -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -qq -e '.[test]' $(foreach p,$(PLUGINS),-e $(p)) playwright

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# Debian's Chromium for the dashboard's browser tests (no browser download is needed).
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (apt-get install chromium) or the browser tests skip"; fi; \
	fi

# compileall: the tests start hundreds of wfe and worker processes, and where
# PYTHONDONTWRITEBYTECODE is set each of them would compile wfcore from source again.
# TEST_JOBS: pytest-xdist processes, one per core (at most 4: each Kafka test process
# starts a broker of its own); TEST_JOBS=0 runs the tests in one process.
TEST_JOBS ?= auto
test: install-dev chromium
	$(BIN)/ruff check wfcore plugins tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -m compileall -q wfcore $(foreach p,$(PLUGINS),$(p)/$(notdir $(p)))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_JOBS) --maxprocesses 4

lint: install-dev
	$(BIN)/ruff check wfcore plugins tests benchmarks examples
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_backlog.py
	$(BIN)/python benchmarks/bench_long_history.py

clean:
	rm -rf $(VENV) .wfe test-output
