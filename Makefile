# payswitch: `make run` starts the switch on its embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FUZZ_STAMP := $(VENV)/.installed-fuzz

.PHONY: run test bench soak fuzz build clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
	PAYSWITCH_NO_EXTENSIONS=1 $(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

# atheris does not build on every platform: only `make fuzz` (and CI) install it.
$(FUZZ_STAMP): $(STAMP)
	PAYSWITCH_NO_EXTENSIONS=1 $(PY) -m pip install -q --no-build-isolation -e '.[test,fuzz]'
	touch $@

# Compiles native/ and the request path (switch/compiled.py) in place; a compile error stops here.
build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace --parallel 2

run: build
	$(PY) -m switch.cli serve --demo

test: build
	$(PY) -m pytest -q tests

# The codec and routing micro-benchmarks, then the switch end to end against a bare
# forwarder and against the same switch on pyiso8583 (benchmarks/e2e_throughput.py).
bench: build
	$(PY) -m pytest -q benchmarks --benchmark-enable --benchmark-columns=min,median,mean,ops,rounds --benchmark-sort=name
	$(PY) -m benchmarks.e2e_throughput --workers 1,auto --json bench-e2e.json

# 10 minutes at 300 TPS, the switch's and its journal writer's RSS every 10 s (SOAK_ARGS: see benchmarks/soak.py).
soak: build
	$(PY) -m benchmarks.soak --json soak.json $(SOAK_ARGS)

fuzz: $(FUZZ_STAMP)
	bash tests/fuzz/run.sh $${FUZZ_SECONDS:-600}

clean:
	rm -rf build native/*.c native/*.so benchmarks/*.c benchmarks/*.so *.egg-info
	find switch adapters \( -name '*.c' -o -name '*.so' -o -name '*.html' \) -delete
