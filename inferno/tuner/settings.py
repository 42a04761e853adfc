"""Settings of the online tuner (kopf style: typed defaults, a docstring per field).

Plain frozen values passed explicitly; nothing here reads the environment or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from inferno.errors import ConfigError
from inferno.tuner.observation import FirstToken

CHI2_2DOF_975 = 7.378
"""χ² quantile, 2 degrees of freedom, 97.5 %: the NIS gate of one (TTFT, ITL) observation."""


class TunerMode(StrEnum):
    """Which estimator keeps α, β, γ up to date after the initial fit."""

    EKF = "ekf"
    """Extended Kalman filter, one predict per cycle and one update per observation."""
    WINDOW = "window"
    """Nelder–Mead refit over a sliding window of recent observations every cycle."""
    OFF = "off"
    """No tuning: the stage passes model data through unchanged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TunerSettings:
    """How the tuner learns α, β, γ per (model, accelerator) (docs/design/optimizer-model.md §6)."""

    mode: TunerMode = TunerMode.EKF
    """Estimator after the initial fit; the controller's ``--tuner`` flag picks it."""
    init_obs: int = 5
    """Valid observations needed before the first multi-observation fit (upstream default)."""
    window_size: int = 20
    """Observations kept per pair (FIFO) for fits and the identifiability guard. Larger than
    upstream's 10 because every replica of a cycle is kept, not only the first one."""
    warm_up_cycles: int = 5
    """Accepted EKF cycles after the initial fit with the NIS gate off (upstream default)."""
    warm_up_timeout_cycles: int = 10
    """Consecutive warming-up cycles after which `is_warming_up` reports False anyway, so a
    pair that never becomes identifiable cannot block the loop; 0 waits forever (upstream
    INFERNO_WARM_UP_TIMEOUT semantics)."""
    percent_change: float = 0.02
    """Process noise: each parameter may drift this fraction (1σ) of its fitted value per
    cycle. Upstream uses 0.1–0.15, which lets 5 %-noisy estimates wander by ~10 %; with 0.02
    they stay within ~5 % (benchmarks/tuner_convergence.py). Large steps (a new engine
    version) are caught by the lockout refit, not by this noise."""
    error_level: float = 0.2
    """Relative measurement error at the ``t_percentile`` level (upstream ConfigMap value)."""
    t_percentile: float = 1.96
    """Student/normal quantile that turns ``error_level`` into one standard deviation."""
    nis_threshold: float = CHI2_2DOF_975
    """Reject an update whose normalised innovation squared is at least this."""
    bound_factor: float = 10.0
    """The state is clamped to [x0/f, f·x0] around the state of the last (re)fit."""
    max_condition_number: float = 1000.0
    """Identifiability guard: hold the parameters while the condition number of the window's
    relative-residual Jacobian (w.r.t. log parameters) exceeds this; 0 disables the guard."""
    max_load_ratio: float = 0.95
    """Model saturation: an observation whose offered rate is at least this fraction of the
    model's max rate (at the current estimate) is not fed to the EKF, and a Jacobian probe
    beyond it is replaced by a one-sided difference (P17 (docs/design/control-loop.md §8), the α
    6.48 → 0.30 fall)."""
    min_throughput_ratio: float = 0.95
    """Observed saturation: throughput below this fraction of the offered rate. 0.98 (the
    upstream evaluator's margin) would reject healthy samples, because a windowed
    completion count carries a few % of Poisson noise."""
    jacobian_step: float = 0.01
    """Relative step of the EKF's central differences (upstream)."""
    max_fev: int = 500
    """Nelder–Mead function evaluations per fit (upstream default); a Levenberg–Marquardt
    polish of at most 200 evaluations follows."""
    residual_threshold: float = 0.5
    """Window mode: drop the single worst observation if its relative residual norm exceeds
    this, then refit (upstream TUNER_RESIDUAL_THRESHOLD)."""
    max_rejected_cycles: int = 3
    """EKF: after this many consecutive cycles whose updates were all NIS-rejected, refit
    over the window instead of staying locked out (upstream P17 NIS lockout)."""
    validation_cycles: int = 3
    """Held-back gate: cycles of fresh observations (scored before the estimator sees them)
    over which a candidate must out-predict the parameters in force before it is published.
    """
    min_improvement: float = 0.1
    """Held-back gate: the candidate's summed squared relative error over those cycles must be
    below (1 − this) × that of the parameters in force (noise alone must not publish)."""
    seed: tuple[float, float, float] = (5.0, 0.05, 5e-5)
    """α (ms), β (ms/token), γ (ms/KV token) used when model data holds no parameters."""
    first_token: FirstToken = FirstToken.DECODE
    """How the collected TTFT counts the first token: ``prefill`` for vLLM and the twin
    (the prefill iteration samples it), ``decode`` for the analyzer's own accounting. The
    default keeps h(x) equal to the analyzer's prediction."""

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"tuner: {message}")

        require(isinstance(self.mode, TunerMode), f"mode must be one of "
                f"{', '.join(m.value for m in TunerMode)}, got {self.mode!r}")
        for name in ("init_obs", "window_size", "max_fev", "max_rejected_cycles",
                     "validation_cycles"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)!r}")
        require(self.window_size >= self.init_obs,
                f"window_size must be >= init_obs ({self.init_obs}), got {self.window_size!r}")
        for name in ("warm_up_cycles", "warm_up_timeout_cycles"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("percent_change", "error_level", "t_percentile", "nis_threshold",
                     "jacobian_step", "residual_threshold"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0,
                    f"{name} must be a finite number > 0, got {value!r}")
        require(self.bound_factor > 1, f"bound_factor must be > 1, got {self.bound_factor!r}")
        require(self.max_condition_number >= 0,
                f"max_condition_number must be >= 0, got {self.max_condition_number!r}")
        require(0 <= self.min_improvement < 1,
                f"min_improvement must be in [0, 1), got {self.min_improvement!r}")
        for name in ("max_load_ratio", "min_throughput_ratio"):
            value = getattr(self, name)
            require(0 < value <= 1, f"{name} must be in (0, 1], got {value!r}")
        require(isinstance(self.first_token, FirstToken), f"first_token must be one of "
                f"{', '.join(f.value for f in FirstToken)}, got {self.first_token!r}")
        require(len(self.seed) == 3 and all(v > 0 for v in self.seed),
                f"seed must be three numbers > 0, got {self.seed!r}")

    @property
    def rel_noise(self) -> float:
        """One standard deviation of a measurement, as a fraction of the measured value."""
        return self.error_level / self.t_percentile
