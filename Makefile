# winnow: the two commands a newcomer needs are `make demo` and `make test`;
# both run `make setup` first (idempotent).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.winnow-installed
KENLM := tools/kenlm/bin/lmplz
APT_PKGS := libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev libeigen3-dev chromium
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: setup apt kenlm test demo lint eval-intent eval-intent-draws eval-lm eval-lm-hi data-dev bench clean report-png \
	dask-up dask-down dask-demo

setup: $(STAMP) $(KENLM)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else echo "missing system packages:$$missing (install them as root)"; exit 1; fi; fi

# torch (CPU, from local disk) first; fairseq-fixed without build isolation (its
# isolated build env would pull a CUDA torch); torchaudio, which fairseq drags in,
# is CUDA-built on PyPI and breaks imports, so it goes.
$(STAMP): pyproject.toml requirements.txt
	@echo "== setup: virtualenv at $(VENV) (about 6.5 min the first time)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q numpy cython setuptools wheel
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-build-isolation fairseq-fixed==0.12.3.1
	$(BIN)/pip uninstall -y -q torchaudio || true
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(KENLM): | apt $(STAMP)
	PYTHON=$(BIN)/python bash scripts/build_kenlm.sh

kenlm: $(KENLM)

# two pytest workers (the CI machine's two cores), one test file each, so that a file's
# module fixtures (the LM chain, the bucket emulators) run once: 25 min against 37 in one
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 tests

demo: setup
	$(BIN)/winnow demo --out runs/demo

lint: setup
	$(BIN)/python -m ruff check pipelines selectors translate lm tests 2>/dev/null || \
	  { $(BIN)/pip install -q ruff && $(BIN)/python -m ruff check pipelines selectors translate lm tests; }

WINNOW_DATA ?= ../shared/datasets
data-dev: setup
	$(BIN)/winnow extract-partition $(WINNOW_DATA)/massive/data/en-US.jsonl runs/data/massive-en-US-dev.jsonl --partition dev
	$(BIN)/winnow split-by-id $(WINNOW_DATA)/massive/output_folder/de/dev.jsonl runs/data/massive-de-DE-devtest.jsonl --fraction 0.2
	$(BIN)/winnow split-by-id $(WINNOW_DATA)/snips_multilingual_test/paper_data/snips/langs/hi_typos_0.05/test/data.tsv runs/data/snips-hi-devtest.tsv --fraction 0.25 --header

# ARGS passes overrides on: make eval-intent ARGS="--set eval.test_path=PATH"
ARGS ?=
eval-intent: data-dev
	$(BIN)/winnow eval-intent configs/massive-intent.yaml $(ARGS)

# several draws of the seeds (~10 min each from scratch; finished draws are reused), then
# every metric side by side with its mean and sd: make eval-intent-draws SEEDS="14 15 16"
SEEDS ?= 14 15 16 17
eval-intent-draws: data-dev
	for s in $(SEEDS); do echo "== draw: seed $$s -> runs/massive-intent-s$$s"; \
	  $(BIN)/winnow eval-intent configs/massive-intent.yaml --set seed=$$s \
	  --set output_dir=runs/massive-intent-s$$s $(ARGS) >/dev/null || exit 1; done
	$(BIN)/winnow compare $(foreach s,$(SEEDS),runs/massive-intent-s$(s))

eval-lm: data-dev
	$(BIN)/winnow eval-lm configs/massive-de.yaml $(ARGS)

eval-lm-hi: data-dev
	$(BIN)/winnow eval-lm configs/snips-hi.yaml $(ARGS)

clean:
	rm -rf runs

# render a run's report.html to PNG with headless Chromium (RUN=runs/demo/demo-intent)
RUN ?= runs/demo/demo-intent
report-png: setup
	$(BIN)/winnow report $(RUN)
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1100,3000 \
	  --screenshot=$(RUN)/report.png file://$$(realpath $(RUN))/report.html
	@echo "rendered $(RUN)/report.png"

# speed of each stage inside Beam against the raw library (BENCH_ARGS=--quick for CI sizes)
bench: setup
	$(BIN)/winnow bench $(BENCH_ARGS) --out bench.json

# a local Dask cluster (scheduler + DASK_WORKERS single-threaded workers on 127.0.0.1),
# started and stopped by pid; dask-demo runs the intent demo's pipelines on it
DASK_WORKERS ?= 2
DASK_PORT ?= 8786
dask-up: setup
	$(BIN)/python -m winnow.pipelines.dask_cluster start --workers $(DASK_WORKERS) --port $(DASK_PORT)

dask-down:
	$(BIN)/python -m winnow.pipelines.dask_cluster stop

dask-demo: setup
	$(BIN)/winnow demo --out runs/demo-dask --set beam.runner=DaskRunner \
	  --dask_client_address=127.0.0.1:$(DASK_PORT)
