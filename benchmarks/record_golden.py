"""Re-record the closed-loop golden run in tests/golden/closedloop-quickstart/ (deliberately).

Runs the quickstart scenario cut to 10 minutes under the inferno policy, and stores what the
regression test replays and compares: the resolved scenario (paths relative to the golden
directory), the workload trace, the controller's decisions (cycles.jsonl) and summary.json.
Run it only when a change of the twin, the controller or a policy is intended, and say so in
the commit: `python benchmarks/record_golden.py`. Tolerances: tests/golden/README.md.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.closedloop.record import RUN_FILES, write_run  # noqa: E402
from sim.closedloop.run import run_scenario  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "closedloop-quickstart"
SETS = ("duration_s=600", "drain_s=300")
KEPT = ("scenario", "trace", "cycles", "summary")


def main() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml", SETS)
    result = run_scenario(scenario, policy="inferno")
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    paths = write_run(result, GOLDEN, plots=False)  # data path written relative to GOLDEN
    for key, path in paths.items():
        if key not in KEPT:
            path.unlink()
    print(f"recorded {result.summary.requests} requests, {len(result.cycles)} cycles, "
          f"SLO attainment {result.summary.slo_attainment:.4f}, cost {result.summary.cost:.3f} "
          f"into {GOLDEN.relative_to(ROOT)}/ ({', '.join(RUN_FILES[k] for k in KEPT)})")


if __name__ == "__main__":
    main()
