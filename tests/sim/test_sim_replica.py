"""Replica engine: exact per-request timelines in tiny setups, fast path vs stepping, KV."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from inferno.errors import ConfigError
from inferno.model import PerfParms, iteration_time_ms
from sim.replica import EngineSettings, Replica
from sim.request import Request, RequestStatus

A, B, G = 10.0, 0.1, 0.01  # the conftest SIMPLE perf, in ms


def it_s(tokens: float, kv: float) -> float:
    """Reference iteration time in seconds, written out from the α/β/γ definition."""
    return (A + B * tokens + G * kv) / 1000.0


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_single_request_timeline(run_replica, fast):
    """One request: prefill iteration emits token 1, then one decode iteration per token."""
    (req,), _ = run_replica([(1.0, 100, 4)], fast_path=fast)
    first = 1.0 + it_s(100, 100)
    finish = first + sum(it_s(1, 100 + j) for j in (1, 2, 3))
    assert req.first_scheduled_s == 1.0
    assert req.first_token_s == pytest.approx(first, abs=1e-12)
    assert req.finish_s == pytest.approx(finish, abs=1e-12)
    assert req.itl_s == pytest.approx((finish - first) / 3, abs=1e-12)
    assert req.status is RequestStatus.DONE


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_analyzer_accounting_first_token_after_one_decode(run_replica, fast):
    """prefill_emits_token=False: first token after prefill + 1 decode, M decodes in all."""
    (req,), _ = run_replica([(0.0, 100, 4)], fast_path=fast, prefill_emits_token=False)
    prefill_end = it_s(100, 100)
    decodes = [it_s(1, 100 + j) for j in (1, 2, 3, 4)]
    assert req.first_token_s == pytest.approx(prefill_end + decodes[0], abs=1e-12)
    assert req.finish_s == pytest.approx(prefill_end + sum(decodes), abs=1e-12)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_arrival_joins_next_iteration_boundary(run_replica, fast):
    """A request arriving mid-iteration is admitted at the next boundary, prefilled with decodes."""
    (a, b), _ = run_replica([(0.0, 100, 100), (0.05, 100, 10)], fast_path=fast)
    t, ctx = it_s(100, 100), 100  # A's prefill
    while t < 0.05:  # A decodes alone until the boundary at/after B's arrival
        ctx += 1
        t += it_s(1, ctx)
    assert b.first_scheduled_s == pytest.approx(t, abs=1e-12)
    # B's prefill shares the iteration with one decode of A (context ctx + 1).
    assert b.first_token_s == pytest.approx(t + it_s(1 + 100, ctx + 1 + 100), abs=1e-12)
    assert a.first_token_s == pytest.approx(it_s(100, 100), abs=1e-12)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_arrival_exactly_at_boundary_joins_that_iteration(simple_perf, fast):
    """Same instant: an arrival at a boundary time is queued before the replica plans (LATE)."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=simple_perf, max_batch=4,
                  settings=EngineSettings(fast_path=fast))
    a, b = Request(0, 100, 50), Request(1, 10, 5)
    t0 = iteration_time_ms(simple_perf, 100, 100) / 1000.0
    t1 = t0 + iteration_time_ms(simple_perf, 1, 101) / 1000.0  # end of A's first decode

    def source():
        a.arrival_s = env.now
        rep.submit(a)
        yield env.timeout(t1)
        b.arrival_s = env.now
        rep.submit(b)

    env.process(source())
    env.run()
    assert b.arrival_s == t1
    assert b.first_scheduled_s == t1


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_chunked_prefill_splits_long_prompt_by_token_budget(run_replica, fast):
    """A 20,000-token prompt takes chunks of 8192, 8192, 3616; KV read grows per chunk."""
    (req,), _ = run_replica([(0.0, 20_000, 2)], fast_path=fast)
    ttft = it_s(8192, 8192) + it_s(8192, 16384) + it_s(3616, 20_000)
    assert req.first_token_s == pytest.approx(ttft, abs=1e-12)
    assert req.finish_s == pytest.approx(ttft + it_s(1, 20_001), abs=1e-12)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_max_batch_bounds_running_set(run_replica, fast):
    """With max_num_seqs = 2, the third and fourth requests start when the first two finish."""
    reqs, _ = run_replica([(0.0, 10, 5)] * 4, max_batch=2, fast_path=fast)
    assert [r.first_scheduled_s for r in reqs[:2]] == [0.0, 0.0]
    done = reqs[0].finish_s
    assert reqs[1].finish_s == done
    assert reqs[2].first_scheduled_s == done
    assert reqs[3].first_scheduled_s == done


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_kv_exhaustion_preempts_latest_and_recomputes(run_replica, fast):
    """KV of 4 blocks: B is preempted at context 33, then recomputes 33 tokens after A ends."""
    (a, b), rep = run_replica([(0.0, 16, 40), (0.0, 16, 40)], kv_capacity_tokens=64,
                              fast_path=fast)
    assert (a.num_preemptions, b.num_preemptions, rep.num_preemptions) == (0, 1, 1)
    # Both prefill together (32 tokens), then decode together while each holds <= 2 blocks.
    t = it_s(32, 32)
    for ctx in range(17, 33):
        t += it_s(2, 2 * ctx)
    assert b.first_token_s == pytest.approx(it_s(32, 32), abs=1e-12)
    # B had emitted 1 + 16 tokens; A finishes alone (context 33..55).
    for ctx in range(33, 56):
        t += it_s(1, ctx)
    assert a.finish_s == pytest.approx(t, abs=1e-12)
    t += it_s(33, 33)  # B recomputes prompt + 17 generated tokens, samples token 18
    for ctx in range(34, 56):  # tokens 19..40
        t += it_s(1, ctx)
    assert b.finish_s == pytest.approx(t, abs=1e-12)


def _random_arrivals(seed: int, n: int, rate: float) -> list[tuple[float, int, int]]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    ins = rng.integers(1, 3000, n)
    outs = rng.integers(1, 400, n)
    return [(float(t), int(i), int(o)) for t, i, o in zip(times, ins, outs, strict=True)]


def _fast_equals_stepping(run_replica, arrivals, **kw):  # noqa: ANN001, ANN202
    """Run ``arrivals`` with the fast path and stepping every iteration; assert equal stamps
    (1e-9 s), preemptions and iterations; return (stepped requests, both replicas)."""
    fast, rep_fast = run_replica(arrivals, fast_path=True, **kw)
    step, rep_step = run_replica(arrivals, fast_path=False, **kw)
    cols = ("first_scheduled_s", "first_token_s", "finish_s")
    got = np.array([[getattr(r, c) for c in cols] for r in fast])
    ref = np.array([[getattr(r, c) for c in cols] for r in step])
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert [r.num_preemptions for r in fast] == [r.num_preemptions for r in step]
    assert rep_fast.num_iterations == rep_step.num_iterations
    return step, rep_fast, rep_step


@pytest.mark.parametrize(("kv_tokens", "emits"), [
    (None, True), (None, False), (20_000, True), (6_000, True), (6_000, False)],
    ids=["unlimited", "unlimited-analyzer-accounting", "kv20k", "kv6k-preempting",
         "kv6k-analyzer-accounting"])
def test_fast_path_equals_stepping_every_iteration(run_replica, kv_tokens, emits):
    """Fast path and one-event-per-iteration give the same stamps (1e-9 s), far fewer events."""
    arrivals = _random_arrivals(7, 400, rate=4.0)
    step, rep_fast, rep_step = _fast_equals_stepping(
        run_replica, arrivals, kv_capacity_tokens=kv_tokens, prefill_emits_token=emits,
        max_batch=32)
    assert rep_step.num_events == rep_step.num_iterations + len(arrivals) - _idle_gaps(step)
    assert rep_fast.num_events * 3 < rep_step.num_events
    if kv_tokens == 6_000:
        assert rep_fast.num_preemptions > 0


@pytest.mark.parametrize("kv_tokens", [None, 6_000], ids=["unlimited", "kv6k-preempting"])
def test_fast_path_equals_stepping_with_frontend_stream_and_knee(run_replica, kv_tokens):
    """With a front-end cost, a stream cost per sample and a piecewise step (knee below most
    prompts), the fast path (fused prefill + decode runs) keeps stepping's stamps (1e-9 s)."""
    from inferno.model import StepShape

    perf = PerfParms(alpha_ms=A, beta_ms=B, gamma_ms=G, frontend_ms=5.0,
                     frontend_per_token_ms=0.01, stream_ms=0.5, shape=StepShape.PIECEWISE,
                     knee_tokens=1024, beta_high_ms=0.3)
    arrivals = _random_arrivals(11, 400, rate=4.0)
    step, rep_fast, rep_step = _fast_equals_stepping(
        run_replica, arrivals, kv_capacity_tokens=kv_tokens, max_batch=32, perf=perf)
    assert rep_fast.num_events * 3 < rep_step.num_events
    # The front-end delays every engine entry by at least α0 + α1·L.
    assert all(r.first_scheduled_s - r.arrival_s >= (5.0 + 0.01 * r.in_tokens) / 1000.0 - 1e-12
               for r in step)
    if kv_tokens is not None:
        assert rep_fast.num_preemptions > 0


def _idle_gaps(reqs: list[Request]) -> int:
    """Arrivals that found the replica busy (they schedule no wake-up when stepping)."""
    busy_until = -math.inf
    found_busy = 0
    for r in sorted(reqs, key=lambda r: r.arrival_s):
        if r.arrival_s < busy_until:
            found_busy += 1
        busy_until = max(busy_until, r.finish_s)
    return found_busy


@pytest.mark.parametrize("kv_tokens", [None, 10_000], ids=["unlimited", "preempting"])
def test_littles_law_holds_exactly_on_a_sample_path(run_replica, kv_tokens):
    """∫(running + waiting) dt equals the sum of times in system when everything finished."""
    arrivals = _random_arrivals(3, 300, rate=6.0)
    reqs, rep = run_replica(arrivals, max_batch=16, kv_capacity_tokens=kv_tokens)
    end = max(r.finish_s for r in reqs)
    run_area, wait_area, _ = rep.areas(end)
    assert run_area + wait_area == pytest.approx(sum(r.e2e_s for r in reqs), rel=1e-9)
    if kv_tokens is None:
        assert rep.num_preemptions == 0
        waits = sum(r.first_scheduled_s - r.arrival_s for r in reqs)
        assert wait_area == pytest.approx(waits, rel=1e-9)
    else:
        assert rep.num_preemptions > 0


def test_waiting_bound_rejects_excess_arrivals(run_replica):
    """max_waiting = 1: a second same-instant arrival is rejected, a later one accepted."""
    (a, b, c), rep = run_replica([(0.0, 10, 5), (0.0, 10, 5), (0.001, 10, 5)], max_batch=1,
                                 max_waiting=1)
    assert (a.status, b.status, c.status) == (
        RequestStatus.DONE, RequestStatus.REJECTED, RequestStatus.DONE)
    assert rep.num_rejected == 1
    assert math.isnan(b.finish_s)


def test_request_that_can_never_fit_kv_is_rejected(run_replica):
    """A request needing more blocks than the whole cache is turned away, not stuck."""
    (big, small), _ = run_replica([(0.0, 100, 10), (0.0, 10, 5)], kv_capacity_tokens=64)
    assert big.status is RequestStatus.REJECTED
    assert small.status is RequestStatus.DONE


@pytest.mark.parametrize(("perf", "match"), [
    (PerfParms(alpha_ms=0.0, beta_ms=0.0, gamma_ms=0.0), "perfParms missing"),
    (PerfParms(alpha_ms=-1.0, beta_ms=0.1, gamma_ms=0.0), r"perfParms.alpha_ms"),
    (PerfParms(alpha_ms=0.0, beta_ms=0.0, gamma_ms=0.1), "alpha \\+ beta"),
], ids=["zero", "negative", "no-fixed-or-compute-cost"])
def test_bad_perf_is_a_config_error(perf, match):
    """Iteration times must be positive: bad perfParms raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        Replica(simpy.Environment(), name="r", perf=perf, max_batch=4)


@pytest.mark.parametrize(("max_batch", "settings", "match"), [
    (0, EngineSettings(), "max_batch"),
    (64, EngineSettings(max_num_batched_tokens=32), "max_num_batched_tokens"),
    (4, EngineSettings(kv_capacity_tokens=8), "kv_capacity_tokens"),
    (4, EngineSettings(max_waiting=-1), "max_waiting"),
    (8193, EngineSettings(max_num_batched_tokens=None),
     r"max_num_batched_tokens must be >= max_batch \(8193\), got 8192"),
], ids=["batch", "budget", "kv", "waiting", "model-data-default"])
def test_bad_engine_settings_are_config_errors(simple_perf, max_batch, settings, match):
    """Out-of-range engine settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        Replica(simpy.Environment(), name="r", perf=simple_perf, max_batch=max_batch,
                settings=settings)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_next_boundary_is_the_end_of_the_iteration_in_progress(simple_perf, fast):
    """Probed anywhere in a lone request's life, next_boundary is the first iteration end
    after the probe and in_flight counts the tokens of the ends before it; idle is inf."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=simple_perf, max_batch=4,
                  settings=EngineSettings(fast_path=fast))
    req = Request(0, 100, 6)
    req.arrival_s = 0.0
    rep.submit(req)
    ends = np.cumsum([it_s(100, 100)] + [it_s(1, 100 + j) for j in range(1, 6)])
    assert rep.next_boundary(0.0) == 0.0  # the wake that plans the prefill, due now
    for t in np.linspace(1e-6, ends[-1] - 1e-6, 97):
        env.run(until=t)
        k = int(np.searchsorted(ends, t, side="right"))  # iterations ended by t
        assert rep.next_boundary(t) == pytest.approx(ends[k], abs=1e-12)
        assert dict(rep.in_flight(t))[req] == k
    env.run()
    assert req.finish_s == pytest.approx(ends[-1], abs=1e-12)
    assert rep.next_boundary(env.now) == math.inf


def _cancel_at(perf, arrivals, cancel_id, cancel_s, *, fast, max_batch=4):
    """Run arrivals [(t, in, out)]; cancel request `cancel_id` at `cancel_s`."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=perf, max_batch=max_batch,
                  settings=EngineSettings(fast_path=fast))
    reqs = [Request(i, n_in, n_out) for i, (_, n_in, n_out) in enumerate(arrivals)]

    def source():
        for req, (t, _, _) in zip(reqs, arrivals, strict=True):
            yield env.timeout(t - env.now)
            req.arrival_s = env.now
            rep.submit(req)

    def cancel():
        yield env.timeout(cancel_s)
        rep.cancel(reqs[cancel_id])

    env.process(source())
    env.process(cancel())
    env.run()
    return reqs, rep


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_cancel_running_request_aborts_at_the_iteration_end(simple_perf, fast):
    """A lone request cancelled mid-decode is ABORTED at the end of the iteration in
    progress, with the tokens of the iterations ended by then counted as generated."""
    ends = np.cumsum([it_s(100, 100)] + [it_s(1, 100 + j) for j in range(1, 50)])
    cancel_s = (ends[9] + ends[10]) / 2  # during the 11th iteration (10th decode)
    (req,), rep = _cancel_at(simple_perf, [(0.0, 100, 50)], 0, cancel_s, fast=fast)
    assert req.status is RequestStatus.ABORTED
    assert req.finish_s == pytest.approx(ends[10], abs=1e-12)
    assert rep.generation_tokens_total == 11
    assert rep.prompt_tokens_total == 100
    assert (rep.num_finished, rep.finished, rep.num_running) == (0, [req], 0)
    assert rep.next_boundary(rep.env.now) == math.inf


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_cancel_frees_the_batch_for_the_other(simple_perf, fast):
    """Two requests decoding together, one cancelled at 0.2 s: it ends with the iteration in
    progress, then the other decodes alone (one token, its own context per iteration)."""
    (a, b), rep = _cancel_at(simple_perf, [(0.0, 100, 40), (0.0, 60, 40)], 0, 0.2, fast=fast)
    t, j = it_s(160, 160), 0  # joint prefill: both have their first token
    while t <= 0.2:  # joint decodes; the j-th puts token j of each in the KV cache
        j += 1
        t += it_s(2, 160 + 2 * j)
    assert (a.status, a.finish_s) == (RequestStatus.ABORTED, pytest.approx(t, abs=1e-12))
    for m in range(j + 2, 41):  # b alone: the decode that produces its token m
        t += it_s(1, 60 + m - 1)
    assert (b.status, b.finish_s) == (RequestStatus.DONE, pytest.approx(t, abs=1e-12))
    assert rep.generation_tokens_total == (1 + j) + 40


def test_cancel_fast_path_equals_stepping(simple_perf):
    """Per-request stamps with a cancel are the same with the fast path and stepping."""
    arrivals = [(0.0, 100, 60), (0.03, 40, 30), (0.05, 200, 50), (0.3, 10, 5)]
    runs = [_cancel_at(simple_perf, arrivals, 2, 0.41, fast=f)[0] for f in (True, False)]
    for fast, step in zip(*runs, strict=True):
        assert fast.status is step.status
        for stamp in ("first_token_s", "finish_s"):
            assert getattr(fast, stamp) == pytest.approx(getattr(step, stamp), abs=1e-9)
    assert runs[0][2].status is RequestStatus.ABORTED


def test_cancel_waiting_request_leaves_the_queue_now(simple_perf):
    """With max batch 1, a queued request cancelled before admission is ABORTED at once
    with nothing generated; the running one is untouched."""
    (a, b), rep = _cancel_at(simple_perf, [(0.0, 100, 10), (0.001, 50, 10)], 1, 0.002,
                             fast=True, max_batch=1)
    (alone,), _ = _cancel_at(simple_perf, [(0.0, 100, 10)], 0, 99.0, fast=True, max_batch=1)
    assert (b.status, b.finish_s) == (RequestStatus.ABORTED, 0.002)
    assert math.isnan(b.first_token_s)
    assert a.finish_s == alone.finish_s
    assert rep.generation_tokens_total == 10
    assert rep.prompt_tokens_total == 100
    assert rep.finished == [b, a]


@pytest.mark.parametrize("kv_tokens", [None, 400], ids=["unlimited", "kv400"])
def test_completion_at_the_end_of_a_prefill_equals_stepping(run_replica, kv_tokens):
    """A decode member whose last token comes with another request's prefill iteration (the
    fast path's prefill-then-decode run must stop there): same stamps as stepping."""
    # a: prefill 21 ms (first token), then 11.11 ms decodes; b arrives after a's first token
    # and joins the next boundary, so a's last token ends b's prefill iteration.
    arrivals = [(0.0, 100, 3), (0.025, 50, 4), (0.026, 30, 2)]
    fast, _ = run_replica(arrivals, fast_path=True, kv_capacity_tokens=kv_tokens)
    step, _ = run_replica(arrivals, fast_path=False, kv_capacity_tokens=kv_tokens)
    for f, s in zip(fast, step, strict=True):
        assert (f.first_token_s, f.finish_s, f.num_preemptions) == pytest.approx(
            (s.first_token_s, s.finish_s, s.num_preemptions), abs=1e-12)
    a, b, _ = step
    assert a.finish_s == pytest.approx(b.first_token_s, abs=1e-12)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_abort_during_a_prefill_leaves_no_first_token(simple_perf, fast):
    """Killed during a request's prefill iteration (the fast path has already planned its
    decodes after it): no first token, no prompt tokens counted, nothing generated for it."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=simple_perf, max_batch=8,
                  settings=EngineSettings(fast_path=fast))
    a, b = Request(0, 100, 40), Request(1, 200, 40)
    b1 = it_s(100, 100)

    def run():
        a.arrival_s = env.now
        rep.submit(a)
        yield env.timeout(b1 + 0.001)  # a decodes; b joins the next boundary
        b.arrival_s = env.now
        rep.submit(b)
        yield env.timeout(0.02)  # b's prefill iteration (22 ms) is in progress
        rep.start()
        rep.abort()

    env.process(run())
    env.run()
    assert b.status is RequestStatus.ABORTED
    assert math.isnan(b.first_token_s)
    assert rep.prompt_tokens_total == 100  # a's only
    assert a.first_token_s == pytest.approx(b1, abs=1e-12)


# ---------------------------------------------------------------- front-end, stream, shape
FRONTEND = PerfParms(alpha_ms=A, beta_ms=B, gamma_ms=G, frontend_ms=5.0,
                     frontend_per_token_ms=0.01)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_frontend_delays_engine_entry(run_replica, fast):
    """The engine sees a request α0 + α1·L after submission; TTFT runs from submission."""
    (req,), rep = run_replica([(1.0, 100, 4)], perf=FRONTEND, fast_path=fast)
    enter = 1.0 + (5.0 + 0.01 * 100) / 1000.0
    first = enter + it_s(100, 100)
    assert req.first_scheduled_s == pytest.approx(enter, abs=1e-12)
    assert req.first_token_s == pytest.approx(first, abs=1e-12)
    assert req.ttft_s == pytest.approx(first - 1.0, abs=1e-12)
    assert rep.ttft_sum_s == pytest.approx(first - 1.0, abs=1e-12)


def test_frontend_cancel_and_drain(simple_perf):
    """A request cancelled in the front-end is aborted and never runs; a draining replica
    waits for its ingesting requests, then goes."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=FRONTEND, max_batch=4)
    rep.mark_ready()
    a, b = Request(0, 100, 3), Request(1, 100, 3)
    for req in (a, b):
        req.arrival_s = 0.0
        rep.submit(req)
    assert rep.num_outstanding == 2
    assert rep.num_waiting == 0
    rep.cancel(a)
    rep.drain()
    assert a.status is RequestStatus.ABORTED
    assert rep.state.value == "draining"
    env.run()
    assert b.status is RequestStatus.DONE
    assert math.isnan(a.first_scheduled_s)
    assert rep.state.value == "gone"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "step"])
def test_stream_and_piecewise_iteration_times(run_replica, fast):
    """One request: its prefill iteration pays the excess beyond the knee and one sample;
    each decode iteration pays one sample."""
    from inferno.model import StepShape

    perf = PerfParms(alpha_ms=A, beta_ms=B, gamma_ms=G, stream_ms=0.5,
                     shape=StepShape.PIECEWISE, knee_tokens=64, beta_high_ms=0.3)
    (req,), _ = run_replica([(0.0, 100, 4)], perf=perf, fast_path=fast)
    first = (A + B * 64 + 0.3 * 36 + G * 100 + 0.5) / 1000.0
    finish = first + sum(it_s(1, 100 + j) + 0.5 / 1000.0 for j in (1, 2, 3))
    assert req.first_token_s == pytest.approx(first, abs=1e-12)
    assert req.finish_s == pytest.approx(finish, abs=1e-12)


def test_engine_settings_for_a_server_resolve_the_model_datas_budget_and_the_servers_kv():
    """None (and, as scenarios always read it, 0) takes the model data's maxNumTokens; a set
    budget stays; a server's own KV capacity replaces the shared one, None keeps it; the
    other fields are kept."""
    shared = EngineSettings(max_num_batched_tokens=None, block_size=32, kv_capacity_tokens=9_000,
                            max_waiting=5, fast_path=False)
    mine = shared.for_server(4096)
    assert mine == EngineSettings(max_num_batched_tokens=4096, block_size=32,
                                  kv_capacity_tokens=9_000, max_waiting=5, fast_path=False)
    assert EngineSettings(max_num_batched_tokens=0).for_server(4096).max_num_batched_tokens == 4096
    assert EngineSettings(max_num_batched_tokens=2048).for_server(4096).budget_tokens == 2048
    assert shared.for_server(4096, 3_000).kv_capacity_tokens == 3_000
    assert EngineSettings(max_num_batched_tokens=None).budget_tokens == 8192  # vLLM's default
