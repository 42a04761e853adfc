"""Batched analyzer: equals the scalar reference row by row; bad rows never raise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inferno.analyzer import (
    QueueBatch,
    QueueConfig,
    Targets,
    analyze,
    analyze_batch,
    size,
    size_batch,
)
from inferno.errors import ConfigError
from inferno.model import PerfModel, PerfParms

REL = 1e-12

SHAPES = [  # (L, m, α, β, γ, token budget)
    (128.0, 512.0, 12.0, 0.05, 0.0005, 8192),
    (128.0, 1024.0, 17.15, 0.034, 0.0010625, 8192),
    (4096.0, 64.0, 8.0, 0.033, 0.000333, 2048),  # chunked: several prefill chunks
    (0.0, 300.0, 20.0, 0.04, 0.001, 0),           # decode only, default budget
]
SIZES = [(1, 3), (2, 0), (7, 70), (48, 128), (130, 0), (256, 64)]


def _grid(model: PerfModel) -> list[QueueConfig]:
    return [QueueConfig(max_batch=n, max_queue=q, in_tokens=L, out_tokens=m,
                        perf=PerfParms(alpha_ms=a, beta_ms=b, gamma_ms=g), perf_model=model,
                        max_num_tokens=t)
            for (n, q), (L, m, a, b, g, t) in itertools.product(SIZES, SHAPES)]


def _batch(cfgs: list[QueueConfig]) -> QueueBatch:
    def col(f):  # noqa: ANN001, ANN202
        return np.array([f(c) for c in cfgs])
    return QueueBatch(
        max_batch=col(lambda c: c.max_batch), max_queue=col(lambda c: c.max_queue),
        in_tokens=col(lambda c: c.in_tokens), out_tokens=col(lambda c: c.out_tokens),
        alpha_ms=col(lambda c: c.perf.alpha_ms), beta_ms=col(lambda c: c.perf.beta_ms),
        gamma_ms=col(lambda c: c.perf.gamma_ms), max_num_tokens=col(lambda c: c.max_num_tokens),
        perf_model=cfgs[0].perf_model)


METRIC_FIELDS = ("throughput_rps", "resp_ms", "num_in_service", "prefill_ms", "itl_ms",
                 "ttft_ms", "max_rate_rps", "rho")


def _same_metrics(scalar: object, batch: object, i: int) -> None:
    for name in METRIC_FIELDS:
        assert getattr(batch, name)[i] == pytest.approx(getattr(scalar, name), rel=REL), name
    # W = T − S can be ~1e-300 ms; compare it on the scale of the response time.
    assert abs(batch.wait_ms[i] - scalar.wait_ms) <= REL * scalar.resp_ms


@pytest.mark.parametrize("model", list(PerfModel))
@pytest.mark.parametrize("targets", [(60.0, 20.0, 0.0), (1000.0, 40.0, 0.0), (0.0, 0.0, 50.0),
                                     (3000.0, 0.0, 0.0), (0.0, 80.0, 0.0), (200.0, 30.0, 10.0)],
                         ids=["tight", "premium", "tps-only", "ttft-only", "itl-only", "all"])
def test_size_batch_equals_scalar(model: PerfModel, targets: tuple[float, float, float]) -> None:
    """Every row of size_batch equals size() of that config: feasibility, reason kind,
    rates per target and metrics at λ* (rel 1e-12)."""
    cfgs = _grid(model)
    got = size_batch(_batch(cfgs), *targets)
    for i, cfg in enumerate(cfgs):
        ref = size(cfg, Targets(ttft_ms=targets[0], itl_ms=targets[1], tps=targets[2]))
        assert got.feasible[i] == ref.feasible, (i, ref.reason, got.reason[i])
        if not ref.feasible:
            assert got.rate_rps[i] == 0.0
            assert ref.reason.split()[0] in got.reason[i]  # "itl"/"ttft" or the field
            continue
        assert got.reason[i] == ""
        for name in ("rate_ttft_rps", "rate_itl_rps", "rate_tps_rps"):
            assert getattr(got, name)[i] == pytest.approx(getattr(ref, name), rel=REL), name
        assert got.rate_rps[i] == pytest.approx(ref.rate_rps, rel=REL)
        _same_metrics(ref.metrics, got.metrics, i)
        assert got.itl_ms[i] == got.metrics.itl_ms[i]


@pytest.mark.parametrize("model", list(PerfModel))
def test_analyze_batch_equals_scalar(model: PerfModel) -> None:
    """Every row of analyze_batch equals analyze() at the same rate (rel 1e-12)."""
    cfgs = _grid(model)
    batch = _batch(cfgs)
    top = analyze_batch(batch, 1.0).max_rate_rps
    rate = top * np.resize([0.05, 0.4, 0.8, 0.999], len(cfgs))
    got = analyze_batch(batch, rate)
    assert got.valid.all()
    for i, cfg in enumerate(cfgs):
        _same_metrics(analyze(cfg, float(rate[i])), got, i)
        assert got.row(i).itl_ms == got.itl_ms[i]


@pytest.mark.parametrize("model", list(PerfModel))
def test_inexact_rates_keep_the_sizing(model: PerfModel) -> None:
    """exact_rates=False stops non-binding searches: same feasibility, rate_rps and
    metrics at λ*, NaN only for a rate per target that could not bind."""
    batch = _batch(_grid(model))
    for targets in ((60.0, 20.0, 0.0), (1000.0, 40.0, 0.0), (200.0, 30.0, 10.0)):
        full = size_batch(batch, *targets)
        fast = size_batch(batch, *targets, exact_rates=False)
        assert np.array_equal(full.feasible, fast.feasible)
        assert np.array_equal(full.rate_rps, fast.rate_rps)
        assert np.array_equal(full.ttft_ms, fast.ttft_ms, equal_nan=True)
        for name in ("rate_ttft_rps", "rate_itl_rps"):
            a, b = getattr(full, name), getattr(fast, name)
            known = ~np.isnan(b)
            assert np.array_equal(a[known], b[known])
            assert np.all(a[~known] >= full.rate_rps[~known] * 0.999)


@pytest.mark.parametrize("model", list(PerfModel))
def test_rates_only_sizing_skips_the_latencies(model: PerfModel) -> None:
    """latencies=False (the concurrency search's probes): the same feasibility, reasons,
    rates, throughput and ρ bit for bit; the latencies at λ* are left inf."""
    batch = _batch(_grid(model))
    for targets in ((60.0, 20.0, 0.0), (1000.0, 40.0, 0.0), (200.0, 30.0, 10.0)):
        full = size_batch(batch, *targets, exact_rates=False)
        rates = size_batch(batch, *targets, exact_rates=False, latencies=False)
        assert full.feasible.any()
        assert np.array_equal(full.feasible, rates.feasible)
        assert np.array_equal(full.reason, rates.reason)
        for name in ("rate_rps", "rate_ttft_rps", "rate_itl_rps", "rate_tps_rps"):
            assert np.array_equal(getattr(full, name), getattr(rates, name), equal_nan=True)
        for name in ("throughput_rps", "num_in_service", "max_rate_rps", "rho", "valid"):
            assert np.array_equal(getattr(full.metrics, name), getattr(rates.metrics, name))
        for name in ("ttft_ms", "itl_ms", "prefill_ms", "wait_ms", "resp_ms"):
            assert np.all(np.isinf(getattr(rates.metrics, name)))


@pytest.mark.parametrize("model", list(PerfModel))
def test_floor_gives_up_only_rows_below_it(model: PerfModel) -> None:
    """floor_rps: a row whose rate reaches its floor is sized bit for bit as without one;
    a row below it is either given up (infeasible, "rate below the floor") or sized as
    usual, never reported at or above the floor."""
    batch = _batch(_grid(model))
    for targets in ((60.0, 20.0, 0.0), (1000.0, 40.0, 0.0), (200.0, 30.0, 10.0)):
        plain = size_batch(batch, *targets, exact_rates=False, latencies=False)
        # floors just above, at and just below each row's own rate (and far above)
        for factor in (1.0 + 1e-6, 1.0, 1.0 - 1e-6, 10.0):
            floor = np.where(plain.feasible, plain.rate_rps * factor, 1.0)
            got = size_batch(batch, *targets, exact_rates=False, latencies=False,
                             floor_rps=floor)
            reach = plain.rate_rps >= floor
            assert np.array_equal(got.rate_rps[reach], plain.rate_rps[reach])
            assert np.array_equal(got.feasible[reach], plain.feasible[reach])
            short = ~reach
            given_up = got.reason == "rate below the floor"
            assert np.all(~got.feasible[given_up])
            kept = short & ~given_up
            assert np.array_equal(got.rate_rps[kept], plain.rate_rps[kept])
            assert np.all(got.rate_rps[short] < floor[short])
            if factor == 10.0:
                assert given_up[plain.feasible].all()
    with pytest.raises(ConfigError, match="exact_rates"):
        size_batch(batch, 60.0, 20.0, 0.0, floor_rps=np.ones(len(batch)))


def test_rows_do_not_depend_on_their_neighbours() -> None:
    """Shuffling the candidates permutes the results and changes nothing else."""
    cfgs = _grid(PerfModel.CHUNKED)
    batch = _batch(cfgs)
    perm = np.random.default_rng(2).permutation(len(cfgs))
    a = size_batch(batch, 500.0, 30.0, 0.0)
    b = size_batch(batch.take(perm), 500.0, 30.0, 0.0)
    assert np.array_equal(a.feasible[perm], b.feasible)
    assert np.allclose(a.rate_rps[perm], b.rate_rps, rtol=1e-13, atol=0)


def test_per_row_targets() -> None:
    """Targets may differ per candidate: each row is sized to its own."""
    cfgs = _grid(PerfModel.CHUNKED)[:8]
    ttft = np.linspace(100.0, 2000.0, 8)
    itl = np.linspace(15.0, 60.0, 8)
    got = size_batch(_batch(cfgs), ttft, itl, 0.0)
    for i, cfg in enumerate(cfgs):
        ref = size(cfg, Targets(ttft_ms=ttft[i], itl_ms=itl[i]))
        assert got.rate_rps[i] == pytest.approx(ref.rate_rps, rel=REL)


BAD = [  # (N, Q, L, m, α, β, γ, budget) and the reason fragment
    ((0, 10, 128.0, 512.0, 12.0, 0.05, 0.0005, 8192), "max_batch < 1"),
    ((4, -1, 128.0, 512.0, 12.0, 0.05, 0.0005, 8192), "max_queue < 0"),
    ((4, 10, -1.0, 512.0, 12.0, 0.05, 0.0005, 8192), "in_tokens"),
    ((4, 10, 128.0, 0.0, 12.0, 0.05, 0.0005, 8192), "out_tokens"),
    ((1, 0, 128.0, 512.0, 12.0, 0.05, 0.0005, 8192), "max_batch + max_queue < 2"),
    ((4, 10, 128.0, 512.0, 12.0, 0.05, 0.0005, -5), "max_num_tokens"),
    ((4, 10, 128.0, 512.0, np.inf, 0.05, 0.0005, 8192), "perf parameters"),
    ((4, 10, 128.0, 512.0, 0.0, 0.0, 0.0, 8192), "service time"),
]


def _with_bad_rows() -> QueueBatch:
    good = (48, 128, 128.0, 512.0, 12.0, 0.05, 0.0005, 8192)
    rows = [good] + [b for b, _ in BAD] + [good]
    cols = list(zip(*rows, strict=True))
    return QueueBatch(max_batch=np.array(cols[0]), max_queue=np.array(cols[1]),
                      in_tokens=np.array(cols[2]), out_tokens=np.array(cols[3]),
                      alpha_ms=np.array(cols[4]), beta_ms=np.array(cols[5]),
                      gamma_ms=np.array(cols[6]), max_num_tokens=np.array(cols[7]))


def test_bad_rows_are_infeasible_with_reason() -> None:
    """Unusable rows are infeasible with a reason and leave the good rows intact."""
    got = size_batch(_with_bad_rows(), 60.0, 20.0, 0.0)
    assert got.feasible[0]
    assert got.feasible[-1]
    # docs/design/optimizer-model.md §7.3(b)
    assert got.rate_rps[0] == pytest.approx(2.949464, rel=1e-4)
    for i, (_, fragment) in enumerate(BAD, start=1):
        assert not got.feasible[i]
        assert fragment in got.reason[i]
        assert got.rate_rps[i] == 0.0
        assert np.isinf(got.ttft_ms[i])


def test_bad_rows_analyze_to_inf() -> None:
    """analyze_batch marks unusable rows invalid with inf metrics instead of raising."""
    got = analyze_batch(_with_bad_rows(), 2.0)
    assert got.valid[0]
    assert got.valid[-1]
    assert not got.valid[1:-1].any()
    assert np.isinf(got.ttft_ms[1:-1]).all()
    assert np.isinf(got.itl_ms[1:-1]).all()


def test_analyze_batch_rejects_per_row_bad_rates() -> None:
    """Rates <= 0, non-finite, or above a classic model's max rate: invalid rows, inf."""
    cfg = _grid(PerfModel.CLASSIC)[15]
    batch = _batch([cfg] * 5)
    top = analyze(cfg, 1.0).max_rate_rps
    got = analyze_batch(batch, np.array([1.0, 0.0, -2.0, np.nan, 1.01 * top]))
    assert got.valid.tolist() == [True, False, False, False, False]
    assert np.isinf(got.ttft_ms[1:]).all()
    assert np.isfinite(got.max_rate_rps[4])


@pytest.mark.parametrize("name", ["ttft_ms", "itl_ms", "tps"])
def test_negative_target_names_the_row(name: str) -> None:
    """A negative target anywhere is a ConfigError naming the field and the row."""
    targets = {"ttft_ms": 0.0, "itl_ms": 0.0, "tps": 0.0}
    targets[name] = np.array([1.0, -3.0])
    with pytest.raises(ConfigError, match=rf"{name}\[1\] must be a finite number >= 0"):
        size_batch(_batch(_grid(PerfModel.CHUNKED)[:2]), **targets)


@pytest.mark.parametrize(("fields", "match"), [
    ({"max_queue": np.zeros(3)}, "max_queue has 3 rows, expected 2"),
    ({"in_tokens": np.zeros((2, 1))}, "in_tokens must be 1-D"),
    ({"max_batch": np.array([1.5, 2.0])}, "max_batch must hold integers"),
], ids=["length", "2-D", "non-integer"])
def test_queue_batch_validates_shapes(fields: dict, match: str) -> None:
    """QueueBatch rejects mismatched lengths, non-1-D fields and fractional counts."""
    base = {"max_batch": np.array([4, 8]), "max_queue": np.zeros(2), "in_tokens": np.ones(2),
            "out_tokens": np.ones(2), "alpha_ms": np.ones(2), "beta_ms": np.ones(2),
            "gamma_ms": np.ones(2), "max_num_tokens": np.zeros(2)}
    base.update(fields)
    with pytest.raises(ConfigError, match=match):
        QueueBatch(**base)


def test_queue_batch_is_read_only() -> None:
    """The batch copies its inputs and cannot be mutated through them."""
    n = np.array([4, 8])
    batch = _batch(_grid(PerfModel.CHUNKED)[:2])
    batch2 = batch.with_sizes(n, np.array([0, 0]))
    n[0] = 99
    assert batch2.max_batch[0] == 4
    with pytest.raises(ValueError, match="read-only"):
        batch.max_batch[0] = 1


def test_empty_batch() -> None:
    """A batch of zero candidates sizes and analyses to empty arrays."""
    empty = _batch(_grid(PerfModel.CHUNKED)[:1]).take(np.array([], dtype=np.int64))
    assert len(size_batch(empty, 1.0, 1.0, 0.0)) == 0
    assert len(analyze_batch(empty, np.zeros(0))) == 0


@pytest.mark.parametrize("model", list(PerfModel))
def test_guessed_halvings_change_nothing(model: PerfModel, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The series phase may evaluate several guessed midpoints per round; without guesses
    it is the plain bisection. Every result is the same bit for bit: each halving is still
    decided by its own metric value, whatever the guesses (also when most are wrong)."""
    from inferno.analyzer import search

    batch = _batch(_grid(model))
    cases = ((60.0, 20.0, 0.0), (1000.0, 40.0, 0.0), (200.0, 30.0, 10.0), (0.0, 25.0, 0.0))

    def sized() -> list:
        return [size_batch(batch, *t, exact_rates=exact) for t in cases
                for exact in (True, False)]

    def one_way(down: bool):  # noqa: ANN202
        """A guessed path that always halves towards one side (often wrong)."""
        def path(lo: np.ndarray, hi: np.ndarray, *_: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
            lo, hi, mids = lo.copy(), hi.copy(), np.empty((4, lo.size))
            for i in range(4):
                mids[i] = 0.5 * (lo + hi)
                (hi if down else lo)[:] = mids[i]
            return mids, np.full(lo.size, 4)
        return staticmethod(path)

    monkeypatch.setattr(search, "_GUESS_ROWS", 0)  # no guesses: the plain bisection
    plain = sized()
    monkeypatch.setattr(search, "_GUESS_ROWS", 10**9)
    others = []
    for steps in (1, 3, 6):
        monkeypatch.setattr(search, "_GUESS_STEPS", steps)
        others.append(sized())
    guessed = others[-1]
    for down in (True, False):
        monkeypatch.setattr(search.LockstepSearch, "_guess_path", one_way(down))
        others.append(sized())
    assert any(p.feasible.any() for p in plain)
    for p, *rest in zip(plain, *others, strict=True):
        for other in rest:
            assert np.array_equal(p.feasible, other.feasible)
            assert np.array_equal(p.rate_rps, other.rate_rps)
            for name in METRIC_FIELDS:
                assert np.array_equal(getattr(p.metrics, name), getattr(other.metrics, name))
    # exact rates: the per-target rates too (no search stops early there)
    for p, g in zip(plain[::2], guessed[::2], strict=True):
        for name in ("rate_ttft_rps", "rate_itl_rps", "rate_tps_rps"):
            assert np.array_equal(getattr(p, name), getattr(g, name))
