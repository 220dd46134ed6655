# The two commands a person needs: `make demo` and `make test`. Both start from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench install clean debian-test-packages sandbox

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) sandbox
	$(BIN)/osaas demo

# What the tests of the faces need from Debian: a virtual X display, input and idle time
# (screensaver, --only-when-idle), and a browser for the web pages; and the sandbox every
# workload runs in (bubblewrap); and PostgreSQL, whose clusters the store's tests start.
DEBIAN_TEST_PACKAGES := xvfb xdotool libxss1 chromium bubblewrap openssl libc6-dev postgresql

# Four workers on two cores: most tests wait on sockets, subprocesses and browsers, not on CPU.
# The slowest tests are listed at the end of every run.
test: $(STAMP) debian-test-packages lint
	$(BIN)/python -m pytest -p no:cacheprovider -n 4 --dist worksteal --durations=15

# The tiers without whole-system runs: pure rules, real parts on loopback, the sandbox; less
# the tests that move bundles through libtorrent swarms (marked swarm), which `make test` runs.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -n 4 -m "not swarm" tests/coordinator tests/workloads tests/overlay tests/peer tests/screensaver tests/test_architecture.py

# The gates: lint, format and types (configured in pyproject.toml). `ruff format .` and
# `ruff check --fix .` mend most of what they find.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The sandbox peers run workloads in (bubblewrap), installed when missing as root; elsewhere a
# note says how (a peer without it runs only bundles of owners the volunteer trusts).
sandbox:
	@if command -v bwrap >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing from Debian: bubblewrap"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
		echo "note: workloads run in a sandbox only with bubblewrap installed (apt-get install bubblewrap)"; \
	fi

# Installed when missing, as root through apt-get (CI); elsewhere a note says what to install.
debian-test-packages:
	@missing=$$(for p in $(DEBIAN_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing from Debian: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: the X11, browser and PostgreSQL tests skip without these Debian packages: $$missing"; \
	fi

bench: $(STAMP) sandbox
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.linkcheck_compare
	$(BIN)/python -m bench.bundle_swarm
	$(BIN)/python -m bench.fair_load_sim
	$(BIN)/python -m bench.coordinator_throughput
	$(BIN)/python -m bench.sandbox_start

clean:
	rm -rf $(VENV) build *.egg-info
