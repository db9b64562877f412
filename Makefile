# The two commands: `make demo` (set up, then a whole inspection line on this box: embedded
# Redis, a model trained on the spot, a worker, simulated cameras, live scores and alerts)
# and `make test` (set up + lint + the test suite). Both create .venv on first use.
# `make test-unit` is the quick check while editing: tests/unit without the tests marked `slow`;
# no Redis, no browser, no server process (a unit test that opens a Redis connection fails, see
# tests/unit/conftest.py), under two minutes on a 2-core CPU. `make test` runs everything: lint,
# tests/unit with the slow ones, tests/integration (real Redis: 127.0.0.1:6379 when it answers,
# else an embedded one; headless Chromium for the console) and tests/chaos.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo

.PHONY: demo demo-offline test test-unit lint bench docs install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The GigE Vision tests need PyGObject, built against the system's GObject introspection
	# (.ci/run installs it with Aravis); without it they are skipped and say why.
	if pkg-config --exists girepository-1.0 cairo 2>/dev/null; then \
		$(BIN)/python -m pip install --quiet -e '.[genicam]'; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlrctl demo --workdir $(DEMO)

# The model workflow without the streaming line: train, calibrate, evaluate, score to overlays.
demo-offline: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/rlrctl synthetic $(DEMO)/data --classes fabric,tile,washer --n-train 40 --n-test 4 --size 256
	$(BIN)/rlrctl train --data $(DEMO)/data --preset lite --epochs 8 --out $(DEMO)/model.rlr \
		--cache-dir $(DEMO)/cache --checkpoint $(DEMO)/train.ckpt
	$(BIN)/rlrctl calibrate --model $(DEMO)/model.rlr --data $(DEMO)/data --far 0.01
	$(BIN)/rlrctl info $(DEMO)/model.rlr
	$(BIN)/rlrctl eval --model $(DEMO)/model.rlr --data $(DEMO)/data --dataset mvtec --out $(DEMO)/report
	$(BIN)/rlrctl score --model $(DEMO)/model.rlr $(DEMO)/data/fabric/test $(DEMO)/data/tile/test \
		$(DEMO)/data/washer/test --out $(DEMO)/overlays

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests/unit

# docs/configuration.md from the settings classes (a unit test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m daemon.cli.settings --markdown > docs/configuration.md

bench: $(STAMP)
	$(BIN)/python benchmarks/model_speed.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache
