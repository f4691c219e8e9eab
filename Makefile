# alphac: set-up, tests, demo. Every target creates .venv and installs alphac into it when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alphac-installed
FMNIST_DEBIAN := /usr/share/datasets/fashion-mnist

# The test suite builds timm, torchvision and transformers models (tests/libmodels.py); alphac
# itself needs none of them. --no-deps keeps pip from swapping the torch build for another.
LIBRARY_MODELS := timm==1.0.31 torchvision==0.28.0 transformers==5.24.0 huggingface_hub==2.4.0 \
	safetensors==0.8.0 pyyaml
LIBRARY_MODEL_DEPS := regex tokenizers tqdm requests packaging filelock fsspec

.PHONY: install data test demo lint bench bench-compare clean coverage bench-deps studies

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(LIBRARY_MODELS)
	$(BIN)/python -m pip install -q $(LIBRARY_MODEL_DEPS)
	$(BIN)/python -m pip install -q "ray>=2.40"
	touch $(STAMP)

# Real data for the tests and the demo: Debian's Fashion-MNIST package where apt-get works (root),
# else alphac's own download into ~/.cache/alphac where the network allows, else a clear message.
data: install
	@if [ -f $(FMNIST_DEBIAN)/train-images-idx3-ubyte.gz ]; then \
		echo "data: Fashion-MNIST found in $(FMNIST_DEBIAN)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist; }; }; then \
		echo "data: installed Debian's dataset-fashion-mnist"; \
	else \
		$(BIN)/alphac data fetch fashion-mnist; \
	fi

test: install data
	$(BIN)/python -m pytest -q

demo: install data
	$(BIN)/alphac inspect zoo:resnet18 --target cifar10
	$(BIN)/alphac mutate zoo:resnet18 --target cifar10 --seed 1 --out .demo/mutant-1
	rm -rf .demo/run
	$(BIN)/alphac optimize zoo:small_cnn --target fashion-mnist --candidates 16 --budget 12m \
		--out .demo/run

lint: install
	$(BIN)/ruff check alphac passes frontends runtime tests bench

# Benchmarks (bench/baselines/README.md): `make bench` runs every suite once and
# writes bench/results/bench.json; `make bench-compare` reruns them and fails when a figure is worse
# than bench/baselines/baseline.json by more than its threshold (bench/compare.py);
# `make bench-baseline` records that baseline from BENCH_REPEATS back-to-back runs.
BENCH_RESULTS := bench/results
BENCH_REPEATS ?= 6
BENCH := $(BIN)/python -m pytest bench -q -p no:cacheprovider --benchmark-only

.PHONY: bench-baseline

bench: install data
	$(BENCH) --benchmark-json=$(BENCH_RESULTS)/bench.json

bench-compare: install data
	rm -f $(BENCH_RESULTS)/compare.json
	-$(BENCH) --benchmark-json=$(BENCH_RESULTS)/compare.json
	$(BIN)/python bench/compare.py check $(BENCH_RESULTS)/compare.json

bench-baseline: install data
	rm -f $(BENCH_RESULTS)/repeat-*.json
	for i in $$(seq $(BENCH_REPEATS)); do \
		$(BENCH) --benchmark-json=$(BENCH_RESULTS)/repeat-$$i.json || exit 1; \
	done
	$(BIN)/python bench/compare.py baseline $(BENCH_RESULTS)/repeat-*.json

# Every timm architecture family and torchvision classification family through capture, exact
# properties, the mixing check and mutation into standalone children (bench/library_coverage.py;
# about 40 minutes on 2 cores); writes bench/results/library_coverage.md.
coverage: install
	$(BIN)/python bench/library_coverage.py

# The search studies of issue #17 (bench/vs_pruning.py, bench/mutation_quality.py,
# bench/search_quality.py): real Fashion-MNIST, hours on 2 cores; results in bench/results/.
# Torch-Pruning is a bench-only dependency, installed without its dependencies so pip never
# swaps the torch build.
bench-deps: install
	$(BIN)/python -m pip install -q "scipy>=1.11"
	$(BIN)/python -m pip install -q --no-deps torch-pruning==1.6.1

studies: bench-deps data
	$(BIN)/python bench/vs_pruning.py
	$(BIN)/python bench/mutation_quality.py
	$(BIN)/python bench/search_quality.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
