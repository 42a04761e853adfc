"""KV-cache block arithmetic: the O(block_size) decode-group formula against a direct sum."""

from __future__ import annotations

import numpy as np
import pytest

from sim.kvcache import KVCache, blocks_for, kv_tokens_from_memory


@pytest.mark.parametrize(("tokens", "blocks"), [(0, 0), (1, 1), (16, 1), (17, 2), (32, 2)])
def test_blocks_for_rounds_up_to_whole_blocks(tokens, blocks):
    """16-token blocks: a partial block counts as one."""
    assert blocks_for(tokens, 16) == blocks


@pytest.mark.parametrize("block_size", [1, 16, 7])
def test_decode_blocks_equals_sum_of_ceilings(block_size):
    """Σ ceil((cbase_i + x)/bs) via the residue histogram equals the direct sum for all x."""
    rng = np.random.default_rng(1)
    cbases = rng.integers(-50, 500, 40).tolist()
    kv = KVCache(10**9, block_size)
    for c in cbases:
        kv.add_decode(c)
    for c in cbases[:5]:
        kv.remove_decode(c)
    live = cbases[5:]
    for x in range(60, 200, 7):
        assert kv.decode_blocks(x) == sum(-(-(c + x) // block_size) for c in live)


def test_max_decode_steps_is_the_last_fitting_counter():
    """The largest k with the group fitting at n + k, found by bisection, is exact."""
    kv = KVCache(16 * 20, 16)
    for c in (5, 30, 17):
        kv.add_decode(c)
    n = 0
    fits = [k for k in range(1, 200) if kv.decode_blocks(n + k) <= 20]
    assert kv.max_decode_steps(n, 199) == max(fits)
    assert kv.max_decode_steps(n, 3) == 3


def test_unlimited_cache_always_fits():
    """capacity None means no KV limit (the analyzer's model)."""
    kv = KVCache(None)
    assert kv.fits(10**12)
    assert not kv.is_limited


def test_kv_tokens_from_memory_subtracts_weights():
    """(80 GB · 0.9 − 26 GB) / 160 kB per token = 287,500 tokens; weights too big → 0."""
    assert kv_tokens_from_memory(mem_gb=80, weights_gb=26, kv_bytes_per_token=160_000) == 287_500
    assert kv_tokens_from_memory(mem_gb=24, weights_gb=26, kv_bytes_per_token=160_000) == 0
