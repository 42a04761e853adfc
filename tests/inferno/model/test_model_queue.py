"""The queue-size rule of a server without one: Q = 10·N (docs/design/optimizer-model.md §2.8)."""

from __future__ import annotations

from inferno.model import MAX_QUEUE_TO_BATCH_RATIO, effective_max_queue


def test_a_server_without_a_queue_size_gets_ten_times_its_batch() -> None:
    assert effective_max_queue(None, 8) == 80
    assert effective_max_queue(None, 256) == 2560


def test_a_stated_queue_size_wins_even_zero() -> None:
    assert effective_max_queue(5, 8) == 5
    assert effective_max_queue(0, 8) == 0


def test_the_optimizer_uses_the_model_s_ratio() -> None:
    """One home: the optimizer's vectorised Q = 10·N reads `inferno.model`'s constant."""
    from inferno.optimizer import candidates

    assert candidates.MAX_QUEUE_TO_BATCH_RATIO is MAX_QUEUE_TO_BATCH_RATIO
    assert MAX_QUEUE_TO_BATCH_RATIO == 10
