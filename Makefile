# Everything the project needs is installed by these targets into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
JOBS ?= 2

.PHONY: install demo test test-all bench lint clean runtime-bundle

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=15

test-all: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -m "" --durations=25

bench: install
	$(PY) benchmarks/e2e_fp32.py --threads 1 2

runtime-bundle: install
	$(PY) -m compiler.tools.runtime_bundle -o out/runtime-bundle

lint: install
	$(VENV)/bin/ruff check --select F,E9 .

clean:
	rm -rf $(VENV) out .pytest_cache
