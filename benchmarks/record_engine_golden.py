"""Re-record tests/golden/engine-mixed/requests.csv (deliberately): the pinned engine stamps.

The per-request stamps of `tests/sim/engine_mixed.run_mixed` pin the replica engine's timing:
a speed-up of the engine must reproduce them to 1e-9 s. Re-record only when a change of the
engine's semantics is intended, and say so in the commit:
`python benchmarks/record_engine_golden.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "sim"))

from engine_mixed import run_mixed  # noqa: E402

from inferno.io import load_system  # noqa: E402

OUT = ROOT / "tests" / "golden" / "engine-mixed" / "requests.csv"


def main() -> None:
    df = run_mixed(load_system(ROOT / "sample-data" / "large"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT, index=False, float_format="%.17g")
    counts = df["status"].value_counts().to_dict()
    print(f"recorded {len(df)} requests ({counts}), {int(df['num_preemptions'].sum())} "
          f"preemptions into {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
