# Sieve: the two commands of the README, and the steps they share.
#   make demo   set up, then run the local demo (broker + worker + producer, live counts)
#   make test   set up (Python deps, and the programs the tests run), then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

# Programs the tests run besides Python, each with the Debian package that brings it:
# java and mvn start the local Kafka broker (its jars come from Maven Central); prometheus and
# promtool check the metrics, the compose file and the dashboard; podman, runc and debootstrap
# build and run the docker/ images (tests/container); chromium runs the review page's browser
# tests (tests/browser, through Playwright, which does not download a browser of its own).
TEST_PROGRAMS := java:default-jre-headless mvn:maven prometheus:prometheus promtool:prometheus \
                 podman:podman runc:runc debootstrap:debootstrap newuidmap:uidmap \
                 fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns chromium:chromium

.PHONY: setup test-setup demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[all]"
	touch $@

setup: $(VENV)/.installed

# As root with apt-get (CI, a fresh machine), installs the missing programs from Debian;
# otherwise names them, and the tests that need them fail saying what is missing.
test-setup: setup
	@missing=""; packages=""; \
	for entry in $(TEST_PROGRAMS); do \
	  command -v "$${entry%%:*}" >/dev/null 2>&1 && continue; \
	  missing="$$missing $${entry%%:*}"; \
	  case " $$packages " in *" $${entry#*:} "*) ;; *) packages="$$packages $${entry#*:}";; esac; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "setup: installing from Debian:$$packages (for$$missing)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$packages >/dev/null) \
	    || echo "setup: apt-get install$$packages failed; the tests that need$$missing will fail" >&2; \
	else \
	  echo "setup: not found:$$missing. Install them (Debian/Ubuntu, as root: apt-get install$$packages);" \
	       "the tests that need them fail until then (skip the image tests with PYTEST_ARGS=\"-m 'not container'\")" >&2; \
	fi

demo: setup
	$(VENV)/bin/sieve demo

# pytest exits 5 when it collected nothing: that means a broken selection, say so.
test: test-setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): check the selection"; fi; \
	exit $$rc

test-fast: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# the quick benchmarks and evaluations (bench/README.md lists the long ones)
bench: setup
	$(PY) bench/eval_accounting.py
	$(PY) bench/bench_batches.py
	$(PY) bench/eval_scoring.py
	$(PY) bench/eval_dedup.py
	$(PY) bench/eval_heuristics.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
