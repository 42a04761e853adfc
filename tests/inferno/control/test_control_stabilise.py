"""Stabilisation and the HPA replica calculator, table driven with hand-computed expectations."""

from __future__ import annotations

import pytest

from inferno.control.settings import StabilisationSettings
from inferno.control.stabilise import Recommendation, hpa_desired, stabilise
from inferno.errors import ConfigError

NOW = 1000.0


def recs(*pairs: tuple[float, int]) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(time_s=NOW - age, replicas=r) for age, r in pairs)


HPA = StabilisationSettings()  # up window 0 s, down window 300 s


@pytest.mark.parametrize(
    ("current", "desired", "history", "settings", "expected"),
    [
        (3, 5, (), HPA, 5),
        # down limit = max(8, 6, 3) = 8, up limit = 3 -> current 5 lies between: keep 5
        (5, 3, recs((200, 8), (100, 6)), HPA, 5),
        # all history older than the window: down limit = 3
        (5, 3, recs((400, 8)), HPA, 3),
        # exactly at now - window is outside (HPA After(cutoff) is strict)
        (5, 3, recs((300, 8)), HPA, 3),
        # down to the highest recommendation of the window, not further
        (8, 3, recs((200, 5), (100, 4)), HPA, 5),
        # up window 60 s: up limit = min(4, 7) = 4, down limit = 7 -> 4
        (3, 7, recs((30, 4)), StabilisationSettings(scale_up_window_s=60.0), 4),
        (3, 9, (), StabilisationSettings(max_step_up=2), 5),
        (6, 2, (), StabilisationSettings(scale_down_window_s=0.0, max_step_down=1), 5),
        # tolerance 0.1 at 20 replicas: a change of 2 is ignored, of 3 is not
        (20, 22, (), StabilisationSettings(tolerance=0.1), 20),
        (20, 23, (), StabilisationSettings(tolerance=0.1), 23),
        (5, 6, (), StabilisationSettings(tolerance=0.1), 6),
    ],
    ids=["up-at-once", "down-held-by-window", "window-expired", "cutoff-strict",
         "down-to-window-max", "up-window", "max-step-up", "max-step-down",
         "tolerance-keeps", "tolerance-exceeded", "tolerance-small-count"],
)
def test_stabilise_table(current: int, desired: int, history: tuple[Recommendation, ...],
                         settings: StabilisationSettings, expected: int) -> None:
    """Stabilised replicas follow the HPA window rule, then the step limits."""
    assert stabilise(current, desired, history, NOW, settings).replicas == expected


def test_stabilise_history_keeps_window_and_appends_tolerated_recommendation() -> None:
    """History drops entries older than the longest window and stores this cycle's value."""
    settings = StabilisationSettings(scale_down_window_s=300.0, tolerance=0.1)
    result = stabilise(20, 21, recs((400, 9), (200, 18)), NOW, settings)
    assert result.recommended == 20
    assert result.history == (Recommendation(time_s=800.0, replicas=18),
                              Recommendation(time_s=NOW, replicas=20))


@pytest.mark.parametrize(
    ("current", "ready", "metric", "target", "expected"),
    [
        (4, 4, 100.0, 50.0, 8),     # ratio 2 -> ceil(2 x 4)
        (4, 4, 52.0, 50.0, 4),      # ratio 1.04, inside 10 % tolerance
        (4, 4, 20.0, 50.0, 2),      # ratio 0.4 -> ceil(1.6)
        (5, 5, 60.0, 50.0, 6),      # ratio 1.2 -> 1.2 x 5 = 6 exactly, not 7
        (6, 4, 75.0, 50.0, 6),      # 2 unready at 0: new ratio 1.5 x 4 / 6 = 1.0 -> keep
        (6, 4, 120.0, 50.0, 10),    # new ratio 2.4 x 4 / 6 = 1.6 -> ceil(1.6 x 6) = 10
        (6, 2, 60.0, 50.0, 6),      # new ratio 1.2 x 2 / 6 = 0.4 flips below 1 -> keep
        (6, 4, 25.0, 50.0, 2),      # scale down counts ready pods only: ceil(0.5 x 4)
    ],
    ids=["double", "tolerance", "halve", "float-ceil", "unready-in-band", "unready-up",
         "unready-flip", "unready-down"],
)
def test_hpa_desired_table(current: int, ready: int, metric: float, target: float,
                           expected: int) -> None:
    """The HPA replica calculator: ceil(ready x metric/target), tolerance, unready pods."""
    assert hpa_desired(current, ready, metric, target, 0.1) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scale_down_window_s": -1.0}, "scale_down_window_s"),
     ({"tolerance": float("nan")}, "tolerance"),
     ({"max_step_up": 0}, "max_step_up")],
    ids=["negative-window", "nan-tolerance", "zero-step"],
)
def test_stabilisation_settings_reject_bad_values(kwargs: dict[str, object], match: str) -> None:
    """Bad stabilisation settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        StabilisationSettings(**kwargs)  # type: ignore[arg-type]
