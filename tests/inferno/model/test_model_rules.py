"""Domain rules with one home in `inferno.model` (docs/design/optimizer-model.md)."""

from __future__ import annotations

import pytest

from inferno.model import DEFAULT_MAX_BATCH, effective_max_batch


def test_default_max_batch_is_upstreams_256() -> None:
    """optimizer-model.md: maxBatchSize 0 means 256 (the concurrency ceiling)."""
    assert DEFAULT_MAX_BATCH == 256


@pytest.mark.parametrize(("sizes", "expected"), [
    ((0,), 256), ((), 256), ((0, 0), 256), ((None, 0), 256), ((None, 16), 16),
    ((0, 64), 64), ((32, 64), 32), ((-1, 8), 8),
])
def test_effective_max_batch_takes_the_first_positive(sizes: tuple[int | None, ...],
                                                     expected: int) -> None:
    assert effective_max_batch(*sizes) == expected
