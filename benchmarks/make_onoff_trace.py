"""Write scenarios/traces/onoff.csv: 40 minutes of on/off bursts (deterministic, seeded).

Periods of a few minutes alternate between "on" (8 req/s) and "off" (1 req/s), with random
on/off durations (uniform 90-240 s on, 120-360 s off), Poisson arrivals within each period,
and lognormal lengths (mean 640 in / 320 out, coefficient of variation 1). A workload whose
bursts last about as long as a replica takes to start: reacting late costs a whole burst,
holding replicas through the off periods costs money.

    python benchmarks/make_onoff_trace.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.workload import ArrivalProcess, Lengths, PiecewiseLinear, TokenDist

SEED = 20261203
DURATION_S = 2400.0
OUT = Path(__file__).resolve().parents[1] / "scenarios" / "traces" / "onoff.csv"


def main() -> None:
    rng_periods, rng_arrivals, rng_lengths = (np.random.default_rng(s) for s in
                                              np.random.SeedSequence(SEED).spawn(3))
    knots: list[tuple[float, float]] = []
    t, on = 0.0, False
    while t < DURATION_S:
        length = float(rng_periods.uniform(90, 240) if on else rng_periods.uniform(120, 360))
        rate = 8.0 if on else 1.0
        knots += [(t, rate), (t + length, rate)]  # equal adjacent times make the steps
        t += length
        on = not on
    profile = PiecewiseLinear(knots=tuple(knots))
    times = []
    for time in ArrivalProcess(rate=profile).times(rng_arrivals):
        if time >= DURATION_S:
            break
        times.append(time)
    pairs = Lengths(input=TokenDist(kind="lognormal", mean=640, cv=1.0),
                    output=TokenDist(kind="lognormal", mean=320, cv=1.0),
                    max_model_len=8192).pairs(rng_lengths)
    lines = ["# on/off bursts: 8 req/s on (90-240 s), 1 req/s off (120-360 s), 40 min; "
             "lognormal lengths 640/320 cv 1; benchmarks/make_onoff_trace.py (seed "
             f"{SEED})", "arrival_s,input_tokens,output_tokens"]
    for time in times:
        n_in, n_out = next(pairs)
        lines.append(f"{time:.4f},{n_in},{n_out}")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(times)} requests over {DURATION_S:.0f} s")


if __name__ == "__main__":
    main()
