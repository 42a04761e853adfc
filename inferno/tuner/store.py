"""Per-(model, accelerator) tuner state and the store that holds it (docs/design/optimizer-model.md
§6.1).

`PairState` is an immutable snapshot replaced once per cycle; `ParameterStore` maps pairs to
it and can save the learned parameters to JSON (and read them back), so a restart need not
learn from scratch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ConfigError
from inferno.io.output import write_text_atomic
from inferno.model import PerfParms
from inferno.tuner.ekf import EkfState
from inferno.tuner.observation import TunerObservation

Key = tuple[str, str]
"""(model, accelerator name)."""


class TunerPhase(StrEnum):
    """Where the tuner is with one (model, accelerator) pair (saved as its ``phase``)."""

    COLLECTING = "collecting"
    """No identifiable fit yet: model data is left as it is."""
    WARMING = "warming"
    """Fitted; the EKF runs its first updates without the NIS gate."""
    TUNED = "tuned"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PairState:
    """Everything the tuner knows about one (model, accelerator) pair."""

    model: str
    accelerator: str
    phase: TunerPhase = TunerPhase.COLLECTING
    params: PerfParms | None = None
    """The estimator's parameters (the candidate); None while collecting."""
    published: PerfParms | None = None
    """What `merge` hands the optimizer: the last candidate that predicted held-back
    observations better than what was in force; None: model data (the prior)."""
    scores: tuple[tuple[float, float, float], ...] = ()
    """Recent held-back errors, (candidate, in force, in force rescaled) per cycle, oldest
    first."""
    ekf: EkfState | None = None
    window: tuple[TunerObservation, ...] = ()
    """Most recent valid observations, oldest first."""
    nis: float | None = None
    """NIS of the last EKF update attempt."""
    kappa: float | None = None
    """Condition number of the window at the last check."""
    fit_value: float | None = None
    """Objective of the last Nelder–Mead fit."""
    update_count: int = 0
    """Cycles with at least one accepted update (EKF) or accepted refit (window)."""
    stalled_cycles: int = 0
    """Consecutive EKF cycles with usable observations but no accepted update."""
    stalled_obs: int = 0
    """Valid observations received during those cycles (the newest of the window)."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Totals per outcome and skip reason."""
    last_updated_s: float | None = None
    last_error: str | None = None

    @property
    def key(self) -> Key:
        return (self.model, self.accelerator)

    def counted(self, *names: str) -> dict[str, int]:
        """``counts`` with one more of each name."""
        out = dict(self.counts)
        for name in names:
            key = str(name)  # enum members count under their plain value
            out[key] = out.get(key, 0) + 1
        return out

    def for_log(self) -> dict[str, Any]:
        """JSON-ready summary (non-finite numbers become None)."""
        p = self.params
        return {
            "model": self.model, "accelerator": self.accelerator, "phase": self.phase.value,
            "alpha": p.alpha_ms if p else None, "beta": p.beta_ms if p else None,
            "gamma": p.gamma_ms if p else None, "nis": _finite(self.nis),
            "published": self.published is not None,
            "kappa": _finite(self.kappa), "fitValue": _finite(self.fit_value),
            "updateCount": self.update_count, "numObs": len(self.window),
            "counts": dict(sorted(self.counts.items())), "lastError": self.last_error,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class ParameterStore:
    """Pair states keyed by (model, accelerator)."""

    def __init__(self) -> None:
        self._states: dict[Key, PairState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[PairState]:
        return iter([self._states[k] for k in sorted(self._states)])

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def get(self, key: Key) -> PairState:
        """The state of ``key``; a fresh collecting state if the pair is new."""
        return self._states.get(key) or PairState(model=key[0], accelerator=key[1])

    def put(self, state: PairState) -> None:
        self._states[state.key] = state

    def learned(self) -> dict[Key, PerfParms]:
        """Parameters in force for every pair that published some (validated ones)."""
        return {k: s.published for k, s in sorted(self._states.items())
                if s.published is not None}

    def save(self, path: str | Path) -> None:
        """Write learned parameters, covariance and bounds to ``path`` atomically (JSON)."""
        entries = []
        for s in self:
            if s.params is None:
                continue
            entry: dict[str, Any] = {
                "model": s.model, "accelerator": s.accelerator, "phase": s.phase.value,
                "alpha": s.params.alpha_ms, "beta": s.params.beta_ms,
                "gamma": s.params.gamma_ms, "updateCount": s.update_count,
                "lastUpdated": s.last_updated_s}
            if s.ekf is not None:
                entry["covariance"] = s.ekf.p.tolist()
                entry["processNoise"] = np.diag(s.ekf.q).tolist()
                entry["min"] = s.ekf.x_min.tolist()
                entry["max"] = s.ekf.x_max.tolist()
            entries.append(entry)
        write_json_atomic(Path(path), {"pairs": entries})

    @classmethod
    def load(cls, path: str | Path) -> ParameterStore:
        """Read a file written by `save`; a malformed one is a `ConfigError` naming the field."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read tuner state: {exc}") from exc
        store = cls()
        pairs = doc.get("pairs") if isinstance(doc, dict) else None
        if not isinstance(pairs, list):
            raise ConfigError(f"{path}: pairs: must be a list, got {type(pairs).__name__}")
        for i, e in enumerate(pairs):
            where = f"{path}: pairs[{i}]"
            try:
                x = np.array([float(e["alpha"]), float(e["beta"]), float(e["gamma"])])
                ekf = None
                if "covariance" in e:
                    ekf = EkfState(x=x, p=np.array(e["covariance"], dtype=float).reshape(3, 3),
                                   q=np.diag(np.array(e["processNoise"], dtype=float)),
                                   x_min=np.array(e["min"], dtype=float),
                                   x_max=np.array(e["max"], dtype=float))
                state = PairState(model=str(e["model"]), accelerator=str(e["accelerator"]),
                                  phase=TunerPhase(e.get("phase", TunerPhase.TUNED.value)),
                                  params=PerfParms(alpha_ms=x[0], beta_ms=x[1], gamma_ms=x[2]),
                                  published=PerfParms(alpha_ms=x[0], beta_ms=x[1],
                                                      gamma_ms=x[2]),
                                  ekf=ekf, update_count=int(e.get("updateCount", 0)),
                                  last_updated_s=e.get("lastUpdated"))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: malformed entry: {exc}") from exc
            if not np.all(x > 0):
                raise ConfigError(f"{where}: alpha, beta, gamma must be > 0, got {x.tolist()}")
            store.put(state)
        return store


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path``, creating its directory if missing, through
    `inferno.io.output` (atomic for a file, a symlink's target replaced, a device written in
    place). Infinite bounds are kept as JSON's ``Infinity``, which `load` reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
