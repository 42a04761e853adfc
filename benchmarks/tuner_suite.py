"""The online tuner on the robustness suite: inferno with `controller.tuner` off vs ekf.

`python benchmarks/tuner_suite.py [--scenarios a,b] [--seeds K] [--tuners off,ekf]
[--workers N] [--csv FILE] [--set KEY=VALUE ...]`. Every scenario of scenarios/suite runs
under the inferno policy with each tuner mode and the same K seeds (run seeds from
SeedSequence(2026), as
benchmarks/suite_results.py), so both modes see the same requests. Prints, per scenario, the
SLO attainment (mean ± std over seeds, and per seed) and cost of each mode and the per-seed
difference ekf − off; docs/tuner.md quotes the table. Wall and CPU time are printed too (the
machine is shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.scenario import load_scenario  # noqa: E402
from sim.sweep import Job, execute  # noqa: E402
from sim.sweep_spec import run_seeds  # noqa: E402

SUITE = ROOT / "scenarios" / "suite"
ROOT_SEED = 2026


def _cpu_s() -> float:
    self_, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def run(scenarios: list[str], tuners: list[str], num_seeds: int,
        workers: int | None, sets: tuple[str, ...] = ()) -> pd.DataFrame:
    seeds = run_seeds(ROOT_SEED, num_seeds)
    jobs, meta = [], []
    for scenario in scenarios:
        for tuner in tuners:
            for index, seed in enumerate(seeds):
                loaded = load_scenario(SUITE / f"{scenario}.yaml",
                                       ["policy.name=inferno", f"controller.tuner={tuner}",
                                        f"seed={seed}", *sets])
                jobs.append(Job(run_id=f"{len(jobs):04d}", scenario=loaded))
                meta.append((scenario, tuner, index))
    outcomes = execute(jobs, workers=workers)
    rows = []
    for (scenario, tuner, index), outcome in zip(meta, outcomes, strict=True):
        s = outcome.summary
        rows.append({"scenario": scenario, "tuner": tuner, "seed_index": index,
                     "slo": 100 * s["slo_attainment"], "cost": s["cost"],
                     "wall_s": outcome.wall_s})
    return pd.DataFrame(rows)


def table(df: pd.DataFrame, tuners: list[str]) -> str:
    base = tuners[0]
    head = ["scenario", *[f"{t} SLO %" for t in tuners],
            *[f"{t} − {base} (per seed)" for t in tuners[1:]], *[f"{t} cost" for t in tuners]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, rows in df.groupby("scenario", sort=True):
        by = {t: rows[rows["tuner"] == t].sort_values("seed_index") for t in tuners}
        cells = [str(scenario)]
        cells += [f"{by[t]['slo'].mean():.1f} ± {by[t]['slo'].std():.1f}" for t in tuners]
        for t in tuners[1:]:
            diff = by[t]["slo"].to_numpy() - by[base]["slo"].to_numpy()
            cells.append(f"{diff.mean():+.2f} (" + ", ".join(f"{d:+.1f}" for d in diff) + ")")
        cells += [f"{by[t]['cost'].mean():.1f}" for t in tuners]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=None, help="comma-separated subset")
    parser.add_argument("--tuners", default="off,ekf")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="extra scenario override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    names = sorted(p.stem for p in SUITE.glob("*.yaml"))
    if args.scenarios:
        names = [n for n in names if n in args.scenarios.split(",")]
    tuners = args.tuners.split(",")
    t0, c0 = time.perf_counter(), _cpu_s()
    df = run(names, tuners, args.seeds, args.workers, tuple(args.sets))
    if args.csv is not None:
        df.to_csv(args.csv, index=False)
    print(table(df, tuners))
    print(f"{len(df)} runs: wall {time.perf_counter() - t0:.0f} s, CPU {_cpu_s() - c0:.0f} s")


if __name__ == "__main__":
    main()
