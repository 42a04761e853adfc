"""The twin's PromQL (sim.promql via sim.scrape) equals a real Prometheus on the same samples.

A small twin run (bursty load, a scale-up whose new pod starts inside a window, a scale-down
whose pods drain and disappear inside one) is scraped by the twin's scraper; every sample of
every pod is written as OpenMetrics with its timestamp, turned into TSDB blocks by `promtool`
and served by a real Prometheus. At several instants the live reader's combined query
(`live.prom.PromReader`, evaluated at that instant) and the twin's `VllmScraper.window` must
agree field by field: both worlds compute one observation from the same vLLM series.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import pytest
import simpy
from prom_harness import PrometheusServer

from inferno.control.observation import VllmWindow
from inferno.model import Accelerator, ModelPerf, PerfParms, System
from live.config import PromSettings
from live.prom import PromReader
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, StartupDelay
from sim.promview import VllmSample
from sim.request import Request
from sim.scrape import VllmScraper

WINDOW_S = 60.0
SCRAPE_S = 5.0
EVAL_S = (100.0, 190.0, 247.0, 330.0, 415.0, 480.0)
"""Collect instants: steady, around the scale-up's new pod, during and after a scale-down."""
NAMES = {
    "success": "vllm:request_success_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "ttft_sum": "vllm:time_to_first_token_seconds_sum",
    "ttft_count": "vllm:time_to_first_token_seconds_count",
    "tpot_sum": "vllm:request_time_per_output_token_seconds_sum",
    "tpot_count": "vllm:request_time_per_output_token_seconds_count",
    "prompt_len_sum": "vllm:request_prompt_tokens_sum",
    "prompt_len_count": "vllm:request_prompt_tokens_count",
    "gen_len_sum": "vllm:request_generation_tokens_sum",
    "gen_len_count": "vllm:request_generation_tokens_count",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_usage": "vllm:kv_cache_usage_perc",
}
assert set(NAMES) == set(VllmSample._fields)


def _twin_run() -> tuple[VllmScraper, dict[float, VllmWindow]]:
    """Run the twin, keeping every sample, and read its windows at the EVAL_S instants."""
    env = simpy.Environment()
    system = System(
        accelerators={"A": Accelerator(name="A", type="T", multiplicity=1, cost_per_hr=1.0)},
        perf={("m", "A"): ModelPerf(model="m", accelerator="A", max_batch_size=4,
                                    perf=PerfParms(alpha_ms=20.0, beta_ms=0.05,
                                                   gamma_ms=0.001))})
    cluster = Cluster(env, system, seed=3, sample_period_s=None)
    dep = cluster.add_deployment(DeploymentSpec(name="d", model="m", accelerator="A",
                                                max_batch=4, num_replicas=2,
                                                startup=StartupDelay(mean_s=20.0)))
    scraper = VllmScraper({"d": dep}, retention_s=math.inf)
    windows: dict[float, VllmWindow] = {}

    def scraping():
        while True:
            scraper.scrape(env.now)
            yield env.timeout(SCRAPE_S)

    def load():
        k = 0
        while env.now < 500:
            burst = 6 if int(env.now) % 40 < 10 else 1  # on/off bursts
            for _ in range(burst):
                cluster.submit(Request(k, 50 + 37 * (k % 7), 20 + 13 * (k % 5), server="d"))
                k += 1
            yield env.timeout(1.0)

    def actions():
        yield env.timeout(170.0)
        dep.set_replicas(3)  # ready at 190: its first samples fall inside later windows
        yield env.timeout(200.0)
        dep.set_replicas(1)  # two pods drain and go inside the windows at 415 and 480

    def reading():
        for t in EVAL_S:
            yield env.timeout(t - env.now)
            windows[t] = scraper.window("d", math.nextafter(t, -math.inf), WINDOW_S,
                                        2 * SCRAPE_S)

    for proc in (scraping(), load(), actions(), reading()):
        env.process(proc)
    env.run(until=520.0)
    return scraper, windows


def _openmetrics(scraper: VllmScraper, origin_s: float) -> str:
    lines = []
    pods = scraper.pods("d")
    for field in VllmSample._fields:
        lines.append(f"# TYPE {NAMES[field]} gauge")
        for rep, series in pods.items():
            labels = f'{{namespace="ns",deployment="d",pod="{rep.name}"}}'
            lines.extend(f"{NAMES[field]}{labels} {getattr(s, field)!r} {origin_s + t:.3f}"
                         for t, s in zip(series.times, series.samples, strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory):
    """A Prometheus serving the twin's samples, placed two hours in the past."""
    scraper, windows = _twin_run()
    workdir = tmp_path_factory.mktemp("promql")
    origin = math.floor(time.time()) - 7200.0
    source = workdir / "samples.om"
    source.write_text(_openmetrics(scraper, origin), encoding="utf-8")
    data = workdir / "data"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source),
                    str(data)], check=True, capture_output=True, timeout=120)
    server = PrometheusServer(workdir, data_dir=data)
    server.start()
    reader = PromReader(PromSettings(url=server.url, window=f"{WINDOW_S:g}s",
                                     recent_window=f"{2 * SCRAPE_S:g}s"))
    yield scraper, windows, reader, origin
    reader.close()
    server.stop()


def test_the_run_exercises_pods_that_start_and_end_inside_windows(backfilled) -> None:
    """Three pods in all: two initial, one ready at 190 s; two drained and went away."""
    scraper, _, _, _ = backfilled
    pods = scraper.pods("d")
    assert len(pods) == 3
    starts = sorted(series.times[0] for series in pods.values())
    assert starts[-1] == pytest.approx(190.0)
    assert sum(series.is_stale for series in pods.values()) == 2


@pytest.mark.parametrize("eval_s", EVAL_S)
def test_twin_window_equals_prometheus(backfilled, eval_s: float) -> None:
    """Every VllmWindow field agrees to 1e-4 relative (the evaluation instants differ by the
    1 ms Prometheus resolution); instant values of pods that went away are not compared,
    since backfilled data carries no staleness markers."""
    scraper, windows, reader, origin = backfilled
    twin = windows[eval_s]
    prom = reader.collect(namespace="ns", time_s=origin + eval_s - 0.001)[("ns", "d")]
    stale_pods = any(series.is_stale and series.times[-1] < eval_s
                     for series in scraper.pods("d").values())
    for f in fields(VllmWindow):
        if f.name in ("running_now", "waiting_now") and stale_pods:
            continue
        want, got = getattr(twin, f.name), getattr(prom, f.name)
        if want is None:
            assert got is None, f.name
        else:
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6), f.name


def test_prometheus_harness_accepts_a_data_dir(tmp_path: Path) -> None:
    """The harness starts on a given TSDB directory (used above for backfilled blocks)."""
    server = PrometheusServer(tmp_path, data_dir=tmp_path / "elsewhere")
    server.start()
    try:
        assert server.query("vector(1)")[0]["value"][1] == "1"
    finally:
        server.stop()
    assert (tmp_path / "elsewhere").is_dir()
