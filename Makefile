# MiCo-Chat: `make demo` runs the main job, `make test` runs the whole suite.
# Both create ./.venv on first use (uv, ~1 min) and fetch the default weights (~1 min).

VENV        ?= .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
CONSTRAINTS ?= constraints/cpu.txt
# The CPU wheel on these machines; on a GPU machine pick your build, e.g.
#   make setup TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS      ?= all,test
STAMP       := $(VENV)/.installed
# Local wheel folder of these machines (holds the CPU torch wheel); ignored where absent.
FIND_LINKS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
INDEX_ARGS  := $(if $(TORCH_INDEX),--index $(TORCH_INDEX) --index-strategy unsafe-best-match,)
PYTEST_ARGS ?=

.PHONY: setup demo test fetch lock bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@echo "$(TORCH)" > $(VENV)/torch-pin.txt
	$(UV) pip install -p $(PY) --compile-bytecode $(FIND_LINKS) $(INDEX_ARGS) \
		-c $(CONSTRAINTS) -c $(VENV)/torch-pin.txt "$(TORCH)" -e ".[$(EXTRAS)]"
	@touch $@

fetch: setup
	$(VENV)/bin/mico-chat fetch

# The web UI with the default model on http://127.0.0.1:7860 (Ctrl-C stops it).
demo: fetch
	$(VENV)/bin/mico-chat serve

test: fetch
	$(PY) -m pytest $(PYTEST_ARGS)

bench: fetch
	@for b in bench/bench_*.py; do echo "== $$b"; PYTHONPATH=tests $(PY) $$b || exit 1; done

lock: setup
	@{ echo "# Exact versions tested together on CPU (Python 3.11, 2 cores). Regenerate with 'make lock'."; \
	   echo "# torch is pinned separately by the Makefile (TORCH variable)."; \
	   $(UV) pip freeze -p $(PY) | grep -v -e '^-e' -e '^mico' -e '^torch=='; } > $(CONSTRAINTS)

clean-venv:
	rm -rf $(VENV)
