"""The replica engine against its pinned stamps: a speed-up must not move any request."""

from __future__ import annotations

import numpy as np
import pandas as pd
from engine_mixed import STAMPS, run_mixed

GOLDEN = "tests/golden/engine-mixed/requests.csv"
TIMES = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s")


def test_mixed_workload_reproduces_the_recorded_stamps(large_system, sample_dir):
    """Preemptions, rejections, chunked prefills, drains, three routers: every stamp within
    1e-9 s of the recording, every status, replica and preemption count equal."""
    want = pd.read_csv(sample_dir.parent / GOLDEN, keep_default_na=True)
    got = run_mixed(large_system)
    assert list(got.columns) == list(STAMPS)
    assert len(got) == len(want)
    for column in ("id", "server", "replica", "status", "in_tokens", "out_tokens",
                   "num_preemptions"):
        assert got[column].tolist() == want[column].tolist(), column
    for column in TIMES:
        a, b = got[column].to_numpy(float), want[column].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        both = ~np.isnan(a)
        assert np.max(np.abs(a[both] - b[both]), initial=0.0) <= 1e-9, column
    assert want["num_preemptions"].sum() > 50
    assert (want["status"] == "rejected").sum() > 50
