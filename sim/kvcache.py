"""Paged KV-cache accounting of one replica: integer blocks of ``block_size`` tokens.

Admission must *test*, not wait (a `simpy.Container` would block), so this is plain arithmetic.
Requests in prefill hold an explicit number of blocks, computed by the engine. Requests in decode
grow by one token per iteration, so the engine keeps them as a *decode group*: member i holds
``ceil((cbase_i + x) / block_size)`` blocks when the replica's decode counter is x. The group's
total is then an O(block_size) formula over a histogram of ``cbase mod block_size``, whatever the
batch size, which is what lets the fast path check many iterations at once.
"""

from __future__ import annotations

UNLIMITED = -1
"""Capacity value meaning "no KV limit" (the analyzer's model has none either)."""


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` tokens."""
    return -(-tokens // block_size)


def kv_tokens_from_memory(*, mem_gb: float, weights_gb: float, kv_bytes_per_token: float,
                          mem_utilization: float = 0.9) -> int:
    """KV capacity (tokens) of a replica: usable memory minus weights, over bytes per token.

    ``mem_utilization`` is vLLM's ``gpu_memory_utilization`` (default 0.9). Returns 0 when the
    weights do not fit.
    """
    free_bytes = (mem_gb * mem_utilization - weights_gb) * 1e9
    return max(0, int(free_bytes // kv_bytes_per_token))


class KVCache:
    """Block arithmetic and capacity of one replica's KV cache, plus its decode group."""

    __slots__ = ("block_size", "capacity_blocks", "is_limited", "num_decode", "sum_cbase",
                 "_hist")

    def __init__(self, capacity_tokens: int | None, block_size: int = 16) -> None:
        self.block_size = block_size
        self.is_limited = capacity_tokens is not None
        self.capacity_blocks = (capacity_tokens // block_size if capacity_tokens is not None
                                else UNLIMITED)
        self.num_decode = 0
        self.sum_cbase = 0
        self._hist = [0] * block_size
        """_hist[r] = decode members with (-cbase) mod block_size == r."""

    def fits(self, blocks: int) -> bool:
        """True when ``blocks`` blocks in total can be held."""
        return not self.is_limited or blocks <= self.capacity_blocks

    def add_decode(self, cbase: int) -> None:
        self.num_decode += 1
        self.sum_cbase += cbase
        self._hist[-cbase % self.block_size] += 1

    def remove_decode(self, cbase: int) -> None:
        self.num_decode -= 1
        self.sum_cbase -= cbase
        self._hist[-cbase % self.block_size] -= 1
        assert self.num_decode >= 0

    def decode_blocks(self, x: int) -> int:
        """Blocks held by the decode group at decode counter ``x``: Σ ceil((cbase_i + x)/bs)."""
        bs = self.block_size
        xm = x % bs
        pad = 0
        for r, count in enumerate(self._hist):
            if count:
                pad += count * ((r - xm) % bs)
        return (self.sum_cbase + self.num_decode * x + pad) // bs

    def decode_fits(self, x: int, other_blocks: int = 0) -> bool:
        """True when the decode group at counter x plus ``other_blocks`` fits the cache.

        Tries the O(1) upper bound Σ ceil(y/bs) <= (Σy + B·(bs − 1)) // bs first.
        """
        if not self.is_limited:
            return True
        cap = self.capacity_blocks - other_blocks
        bs = self.block_size
        nd = self.num_decode
        if (self.sum_cbase + nd * x + nd * (bs - 1)) // bs <= cap:
            return True
        return self.decode_blocks(x) <= cap

    def max_decode_steps(self, n: int, k_max: int, other_blocks: int = 0) -> int:
        """Largest k in [1, k_max] with the decode group fitting at counter n + k.

        Assumes k = 1 fits (the caller has just checked it); the group only grows with k.
        """
        if self.decode_fits(n + k_max, other_blocks):
            return k_max
        cap = self.capacity_blocks - other_blocks
        lo, hi = 1, k_max
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.decode_blocks(n + mid) <= cap:
                lo = mid
            else:
                hi = mid
        return lo
