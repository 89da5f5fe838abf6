# Sieve: the two commands of the README, and the steps they share.
#   make demo   set up, then run the local demo (broker + worker + producer, live counts)
#   make test   set up, then run the whole test suite (unit, models, real Kafka broker)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: setup demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[all]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/sieve demo

# pytest exits 5 when it collected nothing: that means a broken selection, say so.
test: setup
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

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
