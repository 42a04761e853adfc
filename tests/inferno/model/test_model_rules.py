"""Domain rules with one home: default max batch (`inferno.model`), booleans (`inferno.io`)."""

from __future__ import annotations

import pytest

from inferno.errors import ConfigError
from inferno.io.flags import parse_bool
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


@pytest.mark.parametrize("word", ["1", "t", "TRUE", "true", "True", "yes", "Y", "on", " on "])
def test_true_words(word: str) -> None:
    assert parse_bool(word, source="X") is True


@pytest.mark.parametrize("word", ["0", "f", "FALSE", "false", "no", "n", "off", ""])
def test_false_words(word: str) -> None:
    assert parse_bool(word, source="X") is False


def test_other_words_name_the_source_and_value() -> None:
    with pytest.raises(ConfigError, match=r"^INFERNO_X: must be true or false, got 'maybe'$"):
        parse_bool("maybe", source="INFERNO_X")
