"""Per-(model, accelerator) performance data: the iteration-time model and the front-end cost.

One engine iteration takes ``α + β·tokens + γ·kv_tokens`` ms (upstream's linear form, the
default), plus two optional terms that default to 0 so upstream data keeps its meaning:

* ``stream_ms`` per token sampled in the iteration (output processing, detokenisation and
  streaming serial with the engine step);
* a piecewise shape: tokens beyond ``knee_tokens`` cost ``beta_high_ms`` each instead of β
  (small batches are memory-bound, a big chunked prefill is compute-bound: one linear β cannot
  serve both regimes).

The front-end cost ``frontend_ms + frontend_per_token_ms·input tokens`` (HTTP, tokenisation)
delays a request before it reaches the engine: it adds to TTFT and E2E, not to iterations.
`iteration_time_ms` and `frontend_delay_ms` are the one home of these formulas, shared by the
analyzer and the twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MAX_NUM_TOKENS = 8192
"""Per-iteration token budget of the chunked model (vLLM max_num_batched_tokens)."""
DEFAULT_MAX_BATCH = 256
"""Max batch of a server whose model data gives none (maxBatchSize 0): upstream's
DEFAULT_MAX_BATCH_SIZE, and vLLM's max_num_seqs default."""


def effective_max_batch(*sizes: int | None) -> int:
    """The first of `sizes` (most specific first) that is given and > 0, else
    `DEFAULT_MAX_BATCH`: the one home of "max batch 0 means 256"."""
    return next((n for n in sizes if n is not None and n > 0), DEFAULT_MAX_BATCH)


class StepShape(StrEnum):
    """Shape of the iteration time in the number of tokens computed."""

    LINEAR = "linear"
    """α + β·tokens + γ·kv_tokens (upstream)."""
    PIECEWISE = "piecewise"
    """Tokens beyond ``knee_tokens`` cost ``beta_high_ms`` each instead of β."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PerfParms:
    """One engine iteration takes ``alpha_ms + beta_ms·tokens + gamma_ms·kv_tokens`` (+ the
    optional stream and piecewise terms, `iteration_time_ms`).

    alpha_ms: fixed cost per iteration; beta_ms: compute per token computed;
    gamma_ms: memory access per KV-cache token read.
    """

    alpha_ms: float
    beta_ms: float
    gamma_ms: float
    frontend_ms: float = 0.0
    """α0: per-request front-end cost before the engine sees the request (ms)."""
    frontend_per_token_ms: float = 0.0
    """α1: front-end cost per input token (tokenisation) (ms/token)."""
    stream_ms: float = 0.0
    """Cost per token sampled in an iteration, serial with the step (ms/token)."""
    shape: StepShape = StepShape.LINEAR
    knee_tokens: float = 0.0
    """Piecewise shape: tokens per iteration up to which β applies."""
    beta_high_ms: float = 0.0
    """Piecewise shape: cost of each token beyond the knee (ms/token)."""

    @property
    def beta_excess_ms(self) -> float:
        """Extra cost of a token beyond the knee (0 for the linear shape)."""
        return self.beta_high_ms - self.beta_ms if self.shape is StepShape.PIECEWISE else 0.0

    @property
    def has_extras(self) -> bool:
        """True when any term beyond upstream's α, β, γ is in use."""
        return bool(self.frontend_ms or self.frontend_per_token_ms or self.stream_ms
                    or self.shape is not StepShape.LINEAR)

    @property
    def is_zero(self) -> bool:
        """True when the tuner has not produced parameters yet (upstream: infeasible)."""
        return self.alpha_ms == 0.0 and self.beta_ms == 0.0 and self.gamma_ms == 0.0


def iteration_time_ms(perf: PerfParms, tokens: float, kv_tokens: float,
                      num_samples: float = 0.0) -> float:
    """Duration of one engine iteration (ms); shared by the analyzer and the twin.

    ``tokens`` computed, ``kv_tokens`` read, ``num_samples`` output tokens sampled (the
    decodes plus the prefills the iteration completes).
    """
    t = (perf.alpha_ms + perf.beta_ms * tokens + perf.gamma_ms * kv_tokens
         + perf.stream_ms * num_samples)
    if perf.shape is StepShape.PIECEWISE and tokens > perf.knee_tokens:
        t += (perf.beta_high_ms - perf.beta_ms) * (tokens - perf.knee_tokens)
    return t


def frontend_delay_ms(perf: PerfParms, in_tokens: float) -> float:
    """Front-end cost of a request with ``in_tokens`` input tokens (ms): α0 + α1·L."""
    return perf.frontend_ms + perf.frontend_per_token_ms * in_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPerf:
    """Benchmarked behaviour of ``model`` on accelerator ``accelerator`` (a name, not a type)."""

    model: str
    accelerator: str
    acc_count: int = 1
    """Accelerator units per replica (<= 0 in the input is read as 1)."""
    max_batch_size: int = 0
    """Benchmarked max batch at ``at_tokens``; the search ceiling (0: `effective_max_batch`)."""
    at_tokens: int = 0
    perf: PerfParms
    max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS
