"""Benchmark mode: the twin driven like ``vllm bench serve``, and sweeps over load.

One deployment of R replicas (ready at t = 0, round-robin router) receives Poisson arrivals at
a fixed rate (``rate_rps``, open loop), arrivals replayed from timestamps (``arrival_times_s``,
open loop), or C closed-loop users (``concurrency``; all starting at t = 0 unless
``stagger_s`` spreads them, re-issuing at once unless ``think`` draws a think time), with
fixed or distributed input/output lengths (``input``/``output``, `workload.TokenDist`), for
``num_requests`` requests (default 1000, as vllm bench) or for ``duration_s`` seconds of
arrivals; the run continues until every request has finished. Statistics are over all
requests, like vllm bench (exact when the run keeps its requests; else means and totals
exact, percentiles from quantile sketches, `run_bench`): throughput is completions over the
benchmark duration (0 to the last completion); ``itl_ms`` (= ``tpot_ms``, vllm bench's TPOT)
is the per-request mean decode time per output token. ``vllm_bench`` repeats the summary under
`vllm bench serve`'s own key names (mean/median/p99 of TTFT, TPOT, ITL, E2E; totals and
throughputs); the twin does not stamp every token, so ITL there is the token-weighted mean and
its median/p99 are null.
Open-loop runs with round robin and no request table simulate each replica on its own
(`sim.openloop`; identical stamps and summary, faster, in 1 or 2 processes), others run in one
SimPy environment.
In rate mode the result also carries the analyzer's prediction at
the same operating point (same α/β/γ, N, Q = 10·N, the per-replica rate; vllm model by
default): TTFT and ITL as mean/p50/p90/p99, the measurement's shape, plus its other means.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from inferno.errors import ConfigError
from inferno.model import (
    ModelPerf,
    PerfModel,
    System,
    effective_max_batch,
    effective_max_queue,
)
from inferno.model.units import MS_PER_S
from sim import workload
from sim.cluster import Cluster
from sim.deployment import Deployment, DeploymentSpec
from sim.metrics import Stats
from sim.openloop import StreamedStats, Streams, default_workers, is_sorted, run_open_loop
from sim.recorder import RequestTable
from sim.replica import EngineSettings

DEFAULT_NUM_REQUESTS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    model: str
    accelerator: str
    in_tokens: int
    out_tokens: int
    concurrency: int | None = None
    rate_rps: float | None = None
    max_batch: int | None = None
    """None: model-data maxBatchSize (0 there means 256)."""
    kv_tokens: int | None = None
    """KV-cache capacity per replica (tokens); None = unlimited."""
    replicas: int = 1
    num_requests: int | None = None
    duration_s: float | None = None
    seed: int = 0
    router: str = "round_robin"
    prefill_emits_token: bool = True
    perf_model: PerfModel = PerfModel.VLLM
    """The analyzer's model for the rate-mode prediction."""
    input: workload.TokenDist | None = None
    """Input-length distribution (None: fixed ``in_tokens``; else ``in_tokens`` is its mean
    for the analyzer's prediction)."""
    output: workload.TokenDist | None = None
    think: workload.Delay | None = None
    """Closed loop: a user's think time after each response (None: none)."""
    stagger_s: float = 0.0
    """Closed loop: users start evenly spread over this many seconds."""
    arrival_times_s: tuple[float, ...] | None = None
    """Open loop: replay these arrival times (s from the start) instead of Poisson."""

    def __post_init__(self) -> None:
        loads = (self.concurrency, self.rate_rps, self.arrival_times_s)
        if sum(v is not None for v in loads) != 1:
            raise ConfigError("bench: give exactly one of concurrency, rate or arrival times")
        if self.arrival_times_s is not None and len(self.arrival_times_s) < 2:
            raise ConfigError("bench: an arrival replay needs at least 2 timestamps")
        if not (0.0 <= self.stagger_s < math.inf):
            raise ConfigError(f"bench: stagger must be >= 0 s, got {self.stagger_s}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"bench: concurrency must be >= 1, got {self.concurrency}")
        if self.rate_rps is not None and not (self.rate_rps > 0 and math.isfinite(self.rate_rps)):
            raise ConfigError(f"bench: rate must be > 0 req/s, got {self.rate_rps}")
        if self.in_tokens < 1 or self.out_tokens < 1:
            raise ConfigError(f"bench: input and output tokens must be >= 1, got "
                              f"{self.in_tokens}, {self.out_tokens}")
        if self.replicas < 1:
            raise ConfigError(f"bench: replicas must be >= 1, got {self.replicas}")
        if self.num_requests is not None and self.duration_s is not None:
            raise ConfigError("bench: give at most one of num_requests or duration")
        if self.num_requests is not None and self.num_requests < 1:
            raise ConfigError(f"bench: num_requests must be >= 1, got {self.num_requests}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"bench: duration must be > 0 s, got {self.duration_s}")

    @property
    def mode(self) -> str:
        if self.arrival_times_s is not None:
            return "replay"
        return "rate" if self.rate_rps is not None else "concurrency"

    @property
    def load(self) -> float:
        """Rate (req/s; a replay's mean rate) or concurrency."""
        if self.arrival_times_s is not None:
            t = self.arrival_times_s
            return (len(t) - 1) / (t[-1] - t[0]) if t[-1] > t[0] else math.inf
        return float(self.rate_rps if self.rate_rps is not None else self.concurrency)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResult:
    mode: str
    load: float
    max_batch: int
    replicas: int
    num_requests: int
    duration_s: float
    throughput_rps: float
    output_tokens_per_s: float
    ttft_ms: Stats
    itl_ms: Stats
    e2e_ms: Stats
    mean_running: float
    """Time-average requests in the batch per replica over the benchmark duration."""
    num_preemptions: int
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_tokens_per_s: float = 0.0
    """Input plus output tokens over the duration (vllm bench's total token throughput)."""
    tpot_ms: Stats | None = None
    """Per-request (E2E − TTFT)/(output − 1): vllm bench's TPOT (the same as ``itl_ms``)."""
    vllm_bench: dict[str, Any] | None = None
    """The summary under `vllm bench serve`'s key names (module docstring)."""
    analyzer: dict[str, Any] | None = None
    """Rate mode: the analyzer's prediction, ``ttft_ms``/``itl_ms`` as {mean, p50, p90, p99}
    (like the measurement), the rest means (ms, req/s)."""

    def to_json(self) -> dict:
        doc = asdict(self)
        if self.analyzer is None:
            doc.pop("analyzer")
        return doc


def perf_for(system: System, model: str, accelerator: str, data: str = "") -> ModelPerf:
    """The model-data entry of (model, accelerator), or a ConfigError naming the file."""
    where = f"{data}/" if data else ""
    if accelerator not in system.accelerators:
        raise ConfigError(f"{where}accelerator-data.json: unknown accelerator '{accelerator}'; "
                          f"known: {', '.join(sorted(system.accelerators))}")
    mp = system.perf.get((model, accelerator))
    if mp is None:
        if model not in system.models:
            raise ConfigError(f"{where}model-data.json: unknown model '{model}'; known: "
                              f"{', '.join(system.models)}")
        raise ConfigError(f"{where}model-data.json: no entry for model '{model}' on "
                          f"accelerator '{accelerator}'")
    if mp.perf.is_zero:
        raise ConfigError(f"{where}model-data.json: model '{model}' on '{accelerator}': "
                          f"perfParms missing (all zero)")
    return mp


class _Streamed(StreamedStats):
    """`StreamedStats` fed by a SimPy run: terminal requests are handed off from the
    deployment's replicas; the table's rows, if asked for, go to a `RequestTable`."""

    def flush(self, dep: Deployment) -> None:
        batch = [req for rep in dep.replicas if rep.finished for req in rep.hand_off()]
        batch.extend(dep.rejected)
        dep.rejected = []
        self.add(batch)

    def finish(self, dep: Deployment, now: float) -> None:
        self.flush(dep)
        if self.table is not None:
            self.table.now = now
            self.table.add(dep.backlog)
            for rep in dep.replicas:
                if rep.num_outstanding:
                    self.table.add(req for req, _ in rep.in_flight(now))
            self.table.close()


FLUSH_S = 10.0
"""Simulated seconds between hand-offs of a benchmark that keeps no table."""


def run_bench(system: System, cfg: BenchConfig, *, requests_table: bool | Path = True,
              per_replica: bool | None = None, workers: int | None = None) -> BenchResult:
    """Run one benchmark point and summarise it.

    ``requests_table``: True keeps every request and computes exact statistics (like vllm
    bench); False keeps none once finished (percentiles from quantile sketches, `sim.digest`);
    a path also streams the per-request table to that CSV or Parquet file.

    ``per_replica``: simulate each replica on its own (`sim.openloop`: same timestamps, same
    summary, faster; open loop, round robin and no table only); None: whenever the run allows
    it, False: never (one SimPy environment). ``workers``: processes of a per-replica run
    (None: 2 for a large run when a second core is free, `default_workers`).
    """
    mp = perf_for(system, cfg.model, cfg.accelerator)
    max_batch = effective_max_batch(cfg.max_batch, mp.max_batch_size)
    engine = EngineSettings(max_num_batched_tokens=mp.max_num_tokens,
                            kv_capacity_tokens=cfg.kv_tokens,
                            prefill_emits_token=cfg.prefill_emits_token)
    env = simpy.Environment()
    seed_cluster, seed_arrivals, seed_lengths = np.random.SeedSequence(cfg.seed).spawn(3)
    cluster = Cluster(env, system, seed=seed_cluster, sample_period_s=None,
                      retain_requests=requests_table is True)
    dep = cluster.add_deployment(DeploymentSpec(
        name="bench", model=cfg.model, accelerator=cfg.accelerator, max_batch=max_batch,
        num_replicas=cfg.replicas, router=cfg.router, engine=engine))
    seed_lengths, seed_think = seed_lengths.spawn(2)
    lengths = workload.Lengths(input=cfg.input or workload.fixed(cfg.in_tokens),
                               output=cfg.output or workload.fixed(cfg.out_tokens)).pairs(
        np.random.default_rng(seed_lengths))
    factory = workload.RequestFactory()
    num = cfg.num_requests if cfg.duration_s is None and cfg.num_requests is not None else (
        DEFAULT_NUM_REQUESTS if cfg.duration_s is None else None)
    until = math.inf if cfg.duration_s is None else cfg.duration_s
    analyzer = (predict(mp, max_batch, cfg.in_tokens, cfg.out_tokens,
                        cfg.rate_rps / cfg.replicas, replicas=cfg.replicas,
                        perf_model=cfg.perf_model)
                if cfg.rate_rps is not None else None)
    times = None
    if cfg.arrival_times_s is not None:
        num = None if cfg.duration_s is None and cfg.num_requests is None else num
        times = iter(cfg.arrival_times_s)
    elif cfg.rate_rps is not None:
        times = workload.ArrivalProcess(rate=workload.constant(cfg.rate_rps)).times(
            np.random.default_rng(seed_arrivals))
    why_not = _why_not_per_replica(cfg, requests_table, len(dep.ready))
    if per_replica and why_not:
        raise ConfigError(f"bench: per-replica simulation needs {why_not}")
    if times is not None and per_replica is not False and not why_not:
        expected = (num if num is not None else len(cfg.arrival_times_s)
                    if cfg.arrival_times_s is not None else cfg.load * until)
        result = run_open_loop(dep.ready, dep.name, Streams(times, lengths, until, num),
                               workers=workers or default_workers(cfg.replicas, expected))
        kept = result.kept
        return _result(cfg, max_batch, analyzer, completed=kept.num_done,
                       duration_s=kept.last_finish_s, tokens_in=kept.in_tokens,
                       tokens_out=kept.out_tokens, ttft=kept.ttft.stats(),
                       tpot=kept.itl.stats(), e2e=kept.e2e.stats(), decode_s=kept.decode_s,
                       gaps=kept.gaps, preemptions=result.num_preemptions,
                       area_running=result.area_running)
    if times is not None:
        workload.arrivals(env, times, lengths, dep.submit, factory, until_s=until,
                          max_requests=num)
    else:
        think = (cfg.think.draws(np.random.default_rng(seed_think))
                 if cfg.think is not None else None)
        workload.ClosedLoop(env=env, num_users=int(cfg.concurrency or 1), lengths=lengths,
                            submit=dep.submit, factory=factory, until_s=until,
                            max_requests=num, think=think, stagger_s=cfg.stagger_s).start()
    if requests_table is not True:
        return _run_streamed(env, dep, cfg, max_batch, analyzer, RequestTable(
            requests_table, lambda df: df) if isinstance(requests_table, Path) else None)
    env.run()
    df = cluster.requests()
    done = df[df["status"] == "done"]
    duration = float(done["finish_s"].max()) if len(done) else 0.0
    tokens_in, tokens_out = int(done["in_tokens"].sum()), int(done["out_tokens"].sum())
    ttft, tpot, e2e = (Stats.of_seconds(done[c].to_numpy()) for c in ("ttft_s", "itl_s", "e2e_s"))
    return _result(cfg, max_batch, analyzer, completed=len(done), duration_s=duration,
                   tokens_in=tokens_in, tokens_out=tokens_out, ttft=ttft, tpot=tpot, e2e=e2e,
                   decode_s=float((done["e2e_s"] - done["ttft_s"]).sum()),
                   gaps=float((done["out_tokens"] - 1).clip(lower=0).sum()),
                   preemptions=int(df["num_preemptions"].sum()),
                   area_running=_area_running(dep, duration))


def _why_not_per_replica(cfg: BenchConfig, requests_table: bool | Path, ready: int) -> str:
    """What rules out simulating each replica on its own ("" when nothing does)."""
    if cfg.mode == "concurrency":
        return "open-loop arrivals (a rate or arrival times)"
    if cfg.router != "round_robin":
        return f"the round_robin router (got '{cfg.router}')"
    if requests_table is not False:
        return "no request table"
    if ready != cfg.replicas:
        return "every replica ready from the start"
    if cfg.arrival_times_s is not None and not is_sorted(np.asarray(cfg.arrival_times_s)):
        return "increasing arrival times"
    return ""


def _area_running(dep: Deployment, duration_s: float) -> float:
    return sum(r.areas(duration_s)[0] for r in dep.replicas)


def _result(cfg: BenchConfig, max_batch: int, analyzer: dict[str, Any] | None, *,
            completed: int, duration_s: float, tokens_in: int, tokens_out: int, ttft: Stats,
            tpot: Stats, e2e: Stats, decode_s: float, gaps: float, preemptions: int,
            area_running: float) -> BenchResult:
    """The summary of a run, kept (exact statistics) or streamed (sketch percentiles):
    ``decode_s`` sums the completed requests' decode times, ``gaps`` their output tokens
    after the first (the token-weighted mean ITL is their ratio)."""
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    return BenchResult(
        mode=cfg.mode, load=cfg.load, max_batch=max_batch, replicas=cfg.replicas,
        num_requests=completed, duration_s=duration_s, throughput_rps=completed * per_s,
        output_tokens_per_s=tokens_out * per_s, ttft_ms=ttft, itl_ms=tpot, e2e_ms=e2e,
        mean_running=area_running / (duration_s * cfg.replicas) if duration_s > 0 else 0.0,
        num_preemptions=preemptions, total_input_tokens=tokens_in,
        total_output_tokens=tokens_out, total_tokens_per_s=(tokens_in + tokens_out) * per_s,
        tpot_ms=tpot, vllm_bench=_vllm_keys(completed, duration_s, tokens_in, tokens_out, ttft,
                                            tpot, e2e, MS_PER_S * decode_s / gaps
                                            if gaps else math.nan),
        analyzer=analyzer)


def _vllm_keys(completed: int, duration_s: float, tokens_in: int, tokens_out: int, ttft: Stats,
               tpot: Stats, e2e: Stats, itl_mean_ms: float) -> dict[str, Any]:
    """`vllm bench serve`'s result keys (its units: s, req/s, tok/s, ms)."""
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    doc: dict[str, Any] = {
        "completed": completed, "duration": duration_s, "total_input_tokens": tokens_in,
        "total_output_tokens": tokens_out, "request_throughput": completed * per_s,
        "output_throughput": tokens_out * per_s,
        "total_token_throughput": (tokens_in + tokens_out) * per_s}
    for name, s in (("ttft", ttft), ("tpot", tpot), ("e2el", e2e)):
        doc.update({f"mean_{name}_ms": s.mean, f"median_{name}_ms": s.p50,
                    f"p99_{name}_ms": s.p99})
    doc.update({"mean_itl_ms": itl_mean_ms, "median_itl_ms": None, "p99_itl_ms": None})
    return doc


def _run_streamed(env: simpy.Environment, dep: Deployment, cfg: BenchConfig, max_batch: int,
                  analyzer: dict[str, Any] | None, table: RequestTable | None) -> BenchResult:
    kept = _Streamed(table)

    def flushing() -> Generator[simpy.events.Event, Any, None]:
        while env.peek() < math.inf:  # stops once nothing else will happen, as env.run()
            yield env.timeout(FLUSH_S)
            kept.flush(dep)

    env.process(flushing())
    env.run()
    kept.finish(dep, float(env.now))
    return _result(cfg, max_batch, analyzer, completed=kept.num_done,
                   duration_s=kept.last_finish_s, tokens_in=kept.in_tokens,
                   tokens_out=kept.out_tokens, ttft=kept.ttft.stats(), tpot=kept.itl.stats(),
                   e2e=kept.e2e.stats(), decode_s=kept.decode_s, gaps=kept.gaps,
                   preemptions=sum(r.num_preemptions for r in dep.replicas),
                   area_running=_area_running(dep, kept.last_finish_s))


def predict(mp: ModelPerf, max_batch: int, in_tokens: int, out_tokens: int, rate_rps: float,
            *, replicas: int = 1, max_queue: int | None = None,
            perf_model: PerfModel = PerfModel.VLLM) -> dict[str, Any]:
    """The analyzer's metrics for one replica at ``rate_rps`` (throughput × replicas):
    TTFT and ITL as {mean, p50, p90, p99} (ms), the other quantities their means."""
    from inferno.analyzer import QueueConfig, analyze, latency_stats

    cfg = QueueConfig(max_batch=max_batch,
                      max_queue=effective_max_queue(max_queue, max_batch),
                      in_tokens=in_tokens, out_tokens=out_tokens, perf=mp.perf,
                      perf_model=perf_model, max_num_tokens=mp.max_num_tokens)
    m = analyze(cfg, rate_rps)
    ttft, itl = latency_stats(cfg, rate_rps)
    return {"ttft_ms": Stats(mean=ttft.mean, p50=ttft.p50, p90=ttft.p90, p99=ttft.p99),
            "itl_ms": Stats(mean=itl.mean, p50=itl.p50, p90=itl.p90, p99=itl.p99),
            "e2e_ms": m.resp_ms, "wait_ms": m.wait_ms, "prefill_ms": m.prefill_ms,
            "throughput_rps": m.throughput_rps * replicas, "mean_running": m.num_in_service,
            "rho": m.rho, "max_rate_rps": m.max_rate_rps * replicas}


def sweep(system: System, cfg: BenchConfig, loads: list[float], *,
          requests_table: bool | Path = True, workers: int | None = None) -> list[BenchResult]:
    """One benchmark per load value (rate or concurrency, following ``cfg.mode``; a replay
    runs once); a table path gets the load value in its name when there are several.
    ``workers``: processes of a per-replica run (None: `sim.openloop.default_workers`)."""
    from dataclasses import replace

    if cfg.mode == "replay":
        return [run_bench(system, cfg, requests_table=requests_table, workers=workers)]
    out = []
    for load in loads:
        if cfg.mode == "rate":
            point = replace(cfg, rate_rps=float(load))
        else:
            point = replace(cfg, concurrency=int(load))
        table = requests_table
        if isinstance(table, Path) and len(loads) > 1:
            table = table.with_name(f"{table.stem}-{load:g}{table.suffix}")
        out.append(run_bench(system, point, requests_table=table, workers=workers))
    return out


def write_csv(results: list[BenchResult], path: Path) -> None:
    """One row per result in `inferno calibrate`'s columns (mean input/output tokens of the
    completed requests; the load as concurrency or rate_rps), written atomically."""
    import csv
    import io

    from inferno.io.output import write_text_atomic
    from inferno.tuner.benchfile import CSV_COLUMNS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        closed = r.mode == "concurrency"
        row = {"input_tokens": r.total_input_tokens / max(r.num_requests, 1),
               "output_tokens": r.total_output_tokens / max(r.num_requests, 1),
               "concurrency": int(r.load) if closed else "",
               "rate_rps": "" if closed else r.load, "itl_ms": r.itl_ms.mean,
               "ttft_ms": r.ttft_ms.mean, "throughput_rps": r.throughput_rps,
               "max_batch": r.max_batch, "replicas": r.replicas,
               "num_preemptions": r.num_preemptions}
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v
                         for v in (row[c] for c in CSV_COLUMNS)])
    write_text_atomic(Path(path), buf.getvalue())


def format_table(results: list[BenchResult]) -> str:
    """A fixed-width table, one row per result: what `vllm bench serve` prints (duration,
    throughputs, mean/median/p99 of TTFT, TPOT and E2E), units in the column names."""
    load_name = "concurrency" if results and results[0].mode == "concurrency" else "rate_rps"
    cols = ("ttft", "tpot", "e2e")
    head = (f"{load_name:>11} {'reqs':>6} {'thru_rps':>9} {'dur_s':>7} {'out_tok_s':>9} "
            + " ".join(f"{c + '_' + q + '_ms':>13}" for c in cols for q in ("mean", "p50", "p99"))
            + f" {'running':>7}")
    lines = [head]
    for r in results:
        stats = (r.ttft_ms, r.itl_ms, r.e2e_ms)
        lines.append(
            f"{r.load:>11g} {r.num_requests:>6d} {r.throughput_rps:>9.3f} {r.duration_s:>7.1f} "
            f"{r.output_tokens_per_s:>9.1f} "
            + " ".join(f"{v:>13.2f}" for st in stats for v in (st.mean, st.p50, st.p99))
            + f" {r.mean_running:>7.2f}")
        if r.analyzer is not None:
            a = r.analyzer
            ttft, itl = a["ttft_ms"], a["itl_ms"]
            values = (ttft.mean, ttft.p50, ttft.p99, itl.mean, itl.p50, itl.p99)
            lines.append(f"{'analyzer':>11} {'':>6} {a['throughput_rps']:>9.3f} {'':>7} {'':>9} "
                         + " ".join(f"{v:>13.2f}" for v in values)
                         + f" {a['e2e_ms']:>13.2f} {'':>13} {'':>13} {a['mean_running']:>7.2f}")
    return "\n".join(lines)


def plot_sweep(results: list[BenchResult], path: Path, title: str = "") -> None:
    """Latency vs load (TTFT, ITL, E2E; mean and p90; analyzer dashed) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.load for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, key, label in zip(axes, ("ttft_ms", "itl_ms", "e2e_ms"),
                              ("TTFT (ms)", "ITL (ms)", "E2E latency (ms)"), strict=True):
        ax.plot(x, [getattr(r, key).mean for r in results], "o-", label="twin mean")
        ax.plot(x, [getattr(r, key).p90 for r in results], "s:", label="twin p90")
        if all(r.analyzer is not None for r in results):
            pred = [r.analyzer[key] for r in results]  # type: ignore[index]
            ax.plot(x, [p.mean if isinstance(p, Stats) else p for p in pred], "k--",
                    label="analyzer mean")
            if all(isinstance(p, Stats) for p in pred):
                ax.plot(x, [p.p90 for p in pred], "k:", label="analyzer p90")
        ax.set_xlabel("rate (req/s)" if results[0].mode == "rate" else "concurrency")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
