"""Accelerators and capacity pools."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Power:
    """Piecewise-linear power curve (W); informational, never in an objective."""

    idle_w: float = 0.0
    full_w: float = 0.0
    mid_w: float = 0.0
    mid_util: float = 0.0

    def at(self, util: float) -> float:
        """Power draw at utilisation ``util`` in [0, 1]."""
        if self.mid_util <= 0.0 or self.mid_util >= 1.0:
            return self.idle_w + (self.full_w - self.idle_w) * util
        if util <= self.mid_util:
            return self.idle_w + (self.mid_w - self.idle_w) / self.mid_util * util
        return self.mid_w + (self.full_w - self.mid_w) / (1.0 - self.mid_util) * (
            util - self.mid_util)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accelerator:
    """One allocatable unit, e.g. ``4xA100`` = 4 physical cards of pool type ``A100``.

    ``cost_per_hr`` is the price of the whole unit (not multiplied by ``multiplicity``).
    """

    name: str
    type: str
    multiplicity: int = 1
    mem_gb: float = 0.0
    mem_bw_gbps: float = 0.0
    cost_per_hr: float = 0.0
    power: Power = Power()
