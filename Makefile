# The two commands of the README: `make demo` (main job on the embedded default) and `make test` (test suite).
# Each creates or refreshes the virtual environment .venv and installs what it needs, data included.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TCMALLOC := $(firstword $(wildcard /usr/lib/*/libtcmalloc_minimal.so.4))
export HF_HUB_OFFLINE := 1

.PHONY: demo test data browser venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

data:
	@bash scripts/ensure-data.sh

browser:
	@bash scripts/ensure-browser.sh

demo: $(STAMP) data
	LD_PRELOAD=$(TCMALLOC) $(VENV)/bin/diffguard models check

test: $(STAMP) data browser
	$(VENV)/bin/python -m pytest -q
