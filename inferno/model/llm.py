"""Per-(model, accelerator) performance data: the α/β/γ iteration-time model."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_NUM_TOKENS = 8192
"""Per-iteration token budget of the chunked model (vLLM max_num_batched_tokens)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PerfParms:
    """One engine iteration takes ``alpha_ms + beta_ms·tokens + gamma_ms·kv_tokens``.

    alpha_ms: fixed cost per iteration; beta_ms: compute per token computed;
    gamma_ms: memory access per KV-cache token read.
    """

    alpha_ms: float
    beta_ms: float
    gamma_ms: float

    @property
    def is_zero(self) -> bool:
        """True when the tuner has not produced parameters yet (upstream: infeasible)."""
        return self.alpha_ms == 0.0 and self.beta_ms == 0.0 and self.gamma_ms == 0.0


def iteration_time_ms(perf: PerfParms, tokens: float, kv_tokens: float) -> float:
    """Duration of one engine iteration (ms); shared by the analyzer and the twin."""
    return perf.alpha_ms + perf.beta_ms * tokens + perf.gamma_ms * kv_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPerf:
    """Benchmarked behaviour of ``model`` on accelerator ``accelerator`` (a name, not a type)."""

    model: str
    accelerator: str
    acc_count: int = 1
    """Accelerator units per replica (<= 0 in the input is read as 1)."""
    max_batch_size: int = 0
    """Benchmarked max batch at ``at_tokens``; the search ceiling (0 means 256)."""
    at_tokens: int = 0
    perf: PerfParms
    max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS
