"""ProbeConfig: how each problem of a probe is sampled and measured (the sampling section of a probe
recipe). Checked when it is built, so every command and the trainer refuse an impossible setting
before any work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from probe import metrics
from probe.cli import ConfigError

BACKENDS = ("hf", "vllm")
# fields that cannot change the samples (left out of a probe dir's identity)
NOT_IDENTITY = {"num_threads", "rank_timeout"}


@dataclass
class ProbeConfig:
    """How each problem is sampled and measured."""

    n: int = field(default=64, metadata={"help": "Samples per problem (the budget; pass@k up to k = n)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 = off."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest completion, EOS included."})
    batch_size: int = field(
        default=256, metadata={"help": "Samples decoded together (one problem's n in chunks of this)."}
    )
    problems_per_call: int = field(
        default=1,
        metadata={
            "help": "Problems sampled together, batch_size samples of each per sampler call (vllm: one "
            "generate call; host memory holds problems_per_call x batch_size samples at a time)."
        },
    )
    sampling_seed: int = field(
        default=0,
        metadata={"help": "Seed of the samples; each problem draws from (sampling_seed, problem_id)."},
    )
    zeta: float = field(default=0.05, metadata={"help": "Miss probability behind eps = -ln(zeta)/n."})
    ks: list[int] = field(
        default_factory=list,
        metadata={"help": "Extra k values for pass@k besides 1, 2, 4, ..., n (each <= n)."},
    )
    backend: str = field(default="hf", metadata={"help": "hf (transformers, CPU/GPU) | vllm (GPU)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto | float32 | bfloat16 | float16."})
    device: str = field(
        default="auto", metadata={"help": "auto (this process's accelerator, else CPU) | cpu | cuda."}
    )
    num_threads: int = field(
        default=0, metadata={"help": "CPU threads for torch in `python -m probe run` (0 = torch's default)."}
    )
    rank_timeout: float = field(
        default=1800.0,
        metadata={
            "help": "Seconds a process waits at a barrier, or for a process that writes nothing, before it "
            "fails naming the stuck rank (in-training probes use the trainer's ddp_timeout)."
        },
    )
    vllm_num_logprobs: int = field(
        default=20, metadata={"help": "vllm: top logprobs per token behind its truncated entropy estimate."}
    )
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: GPU memory fraction."})
    vllm_enforce_eager: bool = field(
        default=False,
        metadata={"help": "vllm: no torch.compile / CUDA graphs (faster engine start, slower sampling)."},
    )

    def __post_init__(self) -> None:
        """ConfigError naming the first impossible setting."""
        checks = [
            (self.n >= 1, f"ProbeConfig.n must be >= 1, got {self.n}"),
            (self.temperature > 0, f"ProbeConfig.temperature must be > 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"ProbeConfig.top_p must be in (0, 1], got {self.top_p}"),
            (self.max_new_tokens >= 1, f"ProbeConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.batch_size >= 1, f"ProbeConfig.batch_size must be >= 1, got {self.batch_size}"),
            (
                self.problems_per_call >= 1,
                f"ProbeConfig.problems_per_call must be >= 1, got {self.problems_per_call}",
            ),
            (0 < self.zeta < 1, f"ProbeConfig.zeta must be in (0, 1), got {self.zeta}"),
            (self.backend in BACKENDS, f"ProbeConfig.backend: {self.backend!r} is not one of {BACKENDS}"),
            (self.rank_timeout > 0, f"ProbeConfig.rank_timeout must be > 0 s, got {self.rank_timeout}"),
        ]
        for k in self.ks:
            checks.append((1 <= k <= self.n, f"ProbeConfig.ks: k = {k} is outside 1..n (n = {self.n})"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def pass_ks(self) -> list[int]:
        """Every k that pass@k is reported at: 1, 2, 4, ..., n and the extra `ks`."""
        return sorted(set(metrics.k_ladder(self.n)) | set(self.ks))


# A probe recipe's sampling section: what commands that read only its task section skip (`probe ppl`,
# train.build_base).
SAMPLING_KEYS = frozenset(f.name for f in dataclasses.fields(ProbeConfig))
