"""Greedy ties (docs/design/optimizer-model.md, module docstring of inferno.optimizer.greedy):
equal regrets go by the most expensive current option, whatever the float noise says."""

from __future__ import annotations

import math

from inferno.model import SaturationPolicy
from inferno.optimizer import Candidate
from inferno.optimizer.greedy import regret, solve_greedy


def _cand(server: str, acc: str, value: float) -> Candidate:
    return Candidate(server=server, accelerator=acc, acc_type=acc, units=1, num_replicas=1,
                     max_batch=8, cost=value, value=value, itl_ms=math.nan, ttft_ms=math.nan,
                     rho=0.5, max_rate_rps=1.0)


# Both servers' options X -> Y differ by exactly 1.3706, but the float differences do not:
# 94.34137 - 92.97077 = 1.370599999999996 < -391.65792 + 393.02852 = 1.3706000000000245.
DEARER = ("z-last-by-name", 92.97077, 94.34137)
CHEAPER = ("a-first-by-name", -393.02852, -391.65792)


def test_float_noise_is_not_a_regret_difference() -> None:
    assert 94.34137 - 92.97077 < -391.65792 - -393.02852  # the noise this is about
    assert regret(94.34137, 92.97077) == regret(-391.65792, -393.02852)
    assert regret(1.0, 0.5) == 0.5
    assert regret(7.0, 7.0) == 0.0


def test_equal_regrets_serve_the_more_expensive_option_first() -> None:
    """X has no capacity, Y room for one replica, Z plenty: whoever is served first takes Y.

    The regrets at X tie, so the server whose current option is dearer goes first (here the
    one with the smaller float difference and the later name).
    """
    cands = {}
    for name, x, y in (CHEAPER, DEARER):
        # A large Y->Z regret keeps a server first after it fails on X.
        cands[name] = [_cand(name, "X", x), _cand(name, "Y", y), _cand(name, "Z", y + 1000.0)]
    res = solve_greedy(cands, {n: 1 for n in cands}, {"X": 0, "Y": 1, "Z": 10},
                       SaturationPolicy.NONE, False)
    assert res.assigned[DEARER[0]].accelerator == "Y"
    assert res.assigned[CHEAPER[0]].accelerator == "Z"
