# The two commands of the README: `make demo` (main job on the embedded default) and `make test` (test suite).
# Each creates or refreshes the virtual environment .venv and installs what it needs, data included.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Long jobs run through scripts/with-tcmalloc.sh: it preloads Debian's tcmalloc when installed (looked up when the
# job starts, i.e. after the `tcmalloc` prerequisite may have installed it); without it the job runs as is.
WITH_TCMALLOC := bash scripts/with-tcmalloc.sh
export HF_HUB_OFFLINE := 1
# Passive OpenMP waiting: spinning worker threads make small network calls 10-100x slower on a busy 2-core machine.
export OMP_WAIT_POLICY := PASSIVE
# The README's demo: the tuned configuration (fmnist6-tuned: the recommended DiffGuard + ViM veto-split fusion and the other
# fusions, the larger diffusion model, the baselines) on a seeded subset of DEMO_LIMIT images per set; then the
# recommended guard is exported and scores a handful of images. The untuned paper presets are one flag away:
# `make demo DEMO_CONFIG=fmnist6`. `make full` runs every untuned method on every image.
DEMO_LIMIT ?= 32
DEMO_CONFIG ?= fmnist6-tuned
DEMO_OUT ?= results/$(DEMO_CONFIG)-demo
ifeq ($(DEMO_CONFIG),fmnist6)
DEMO_METHODS ?= msp,mls,ebo,knn,vim,mds,mc_dropout,odin,ensemble,diffguard-cfg,diffguard-cfg-oracle
endif

.PHONY: demo test data browser tcmalloc venv models-check full ablations results-docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

data:
	@bash scripts/ensure-data.sh

browser:
	@bash scripts/ensure-browser.sh

# Debian's libtcmalloc-minimal4 when missing and this process may install packages; never fails (a speed-up only).
tcmalloc:
	@bash scripts/ensure-tcmalloc.sh

demo: $(STAMP) data tcmalloc
	$(WITH_TCMALLOC) $(VENV)/bin/diffguard benchmark $(DEMO_CONFIG) --limit $(DEMO_LIMIT) \
		--set val_limit=$(DEMO_LIMIT) $(if $(DEMO_METHODS),--methods $(DEMO_METHODS),) --out $(DEMO_OUT)
	$(WITH_TCMALLOC) $(VENV)/bin/diffguard export $(DEMO_OUT) --out $(DEMO_OUT)/guard
	$(VENV)/bin/python scripts/demo_images.py $(DEMO_OUT)/images
	$(WITH_TCMALLOC) $(VENV)/bin/diffguard score $(DEMO_OUT)/images --guard $(DEMO_OUT)/guard \
		--out $(DEMO_OUT)/guard-scores.csv --no-progress

# The full fmnist6 run (hours on 2 CPU cores; resumable: rerun to continue) and the four paper ablations.
full: $(STAMP) data tcmalloc
	$(WITH_TCMALLOC) $(VENV)/bin/diffguard benchmark fmnist6 --out results/fmnist6

ablations: $(STAMP) data tcmalloc
	for a in clean-grad early-stop cam-cut steps; do \
		$(WITH_TCMALLOC) $(VENV)/bin/diffguard benchmark ablation-$$a || exit 1; done

# Copy the finished ablations' tables and plots to docs/results/ (what the README links to).
results-docs:
	mkdir -p docs/results
	for a in clean-grad early-stop cam-cut steps; do \
		if [ -f results/ablation-$$a/ablation.md ]; then \
			cp results/ablation-$$a/ablation.md docs/results/ablation-$$a.md; \
			cp results/ablation-$$a/ablation.png docs/results/ablation-$$a.png; fi; done

models-check: $(STAMP) data tcmalloc
	$(WITH_TCMALLOC) $(VENV)/bin/diffguard models check

# Two pytest workers (one per core of the reference machine), each test file on one worker so module fixtures are
# built once: 8 min instead of 12 on a busy 2-core machine. TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

test: $(STAMP) data browser tcmalloc
	$(WITH_TCMALLOC) $(VENV)/bin/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
