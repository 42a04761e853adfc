"""Shared fixtures: paths to the data shipped in the repository (never a path outside it)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample-data"
CASES = Path(__file__).resolve().parent / "data" / "optimizer-cases"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The upstream sample data directory (small/ and large/)."""
    return SAMPLE


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """Reference optimizer cases produced by the upstream Go optimizer."""
    return CASES
