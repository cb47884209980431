# The README's two commands: `make demo` (embedded stack on 127.0.0.1) and `make test`.
# Both (re)create .venv when it is missing or pyproject.toml changed (stamp on its hash).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
# Backend.AI's official client, in its own venv: the end-to-end tests drive it unmodified.
BAI    := .venv-bai
BAI_CLIENT := backend.ai-client==23.3.12
PY     := $(VENV)/bin/python
HASH   := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP  := $(VENV)/.installed-$(HASH)
# Ray must not rewrite 127.0.0.1 to this machine's address (docs/architecture.md, The embedded stack
# and Docker).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: venv demo down test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

$(BAI)/bin/backend.ai:
	@test -x $(BAI)/bin/python || $(PYTHON) -m venv $(BAI)
	$(BAI)/bin/python -m pip install -q '$(BAI_CLIENT)'

demo: $(STAMP)
	KH=$(VENV)/bin/kh scripts/demo.sh

down: $(STAMP)
	$(VENV)/bin/kh down

test: $(STAMP) $(BAI)/bin/backend.ai
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/append.py
	$(PY) bench/policy.py
	$(PY) bench/replay.py
	$(PY) bench/schedule.py
	$(PY) bench/idle.py
	$(PY) bench/exec.py
	$(PY) bench/start.py
	$(PY) bench/gateway.py
	$(PY) bench/sdk.py

clean:
	rm -rf $(VENV) $(BAI) .pytest_cache .mypy_cache .ruff_cache .hypothesis
