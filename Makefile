# Each target sets up what it needs on a fresh machine: a venv in .venv, CPU torch pinned
# (a range would make pip fetch a multi-GB CUDA build), everything else from constraints.txt.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
RUNS    ?= runs

.PHONY: setup base demo test test-slow test-deepspeed bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A machine with a GPU may bring its own torch: skip the CPU pin when one is installed.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# base model (cached) -> GRPO with periodic probes -> base vs every probe point.
# Rerunning resumes: finished stages are reused, never redone.
base: setup
	$(BIN)/python -m train.build_base --config configs/base/countdown_tiny.yaml --output_dir $(RUNS)/base/countdown_tiny

demo: base
	$(BIN)/accelerate launch --config_file configs/accelerate/cpu.yaml -m train \
		--config configs/train/countdown_tiny.yaml --output_dir $(RUNS)/countdown_tiny
	$(BIN)/python -m probe compare $(RUNS)/countdown_tiny \
		--output_dir $(RUNS)/countdown_tiny/compare
	$(BIN)/python -m probe plot $(RUNS)/countdown_tiny --output_dir $(RUNS)/countdown_tiny/plots

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# DeepSpeed ZeRO-2/3 on 2 CPU ranks. DeepSpeed compiles a small C++ extension on first use (~2 min);
# it is kept in the project's .cache (gitignored) so reruns reuse it.
test-deepspeed: setup
	TORCH_EXTENSIONS_DIR=$(CURDIR)/.cache/torch_extensions $(BIN)/python -m pytest -q -m deepspeed

# Ratios against baselines run in the same process, on the embedded base model; the train bench
# reads the measured probe share from the demo run when one exists.
bench: base
	$(BIN)/python benchmarks/bench_probe.py --model $(RUNS)/base/countdown_tiny
	$(BIN)/python benchmarks/bench_train.py --model $(RUNS)/base/countdown_tiny \
		$$(test -d $(RUNS)/countdown_tiny && echo --run $(RUNS)/countdown_tiny)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
