"""`inferno analyze`: queue metrics and the max SLO-meeting rate for one operating point."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from inferno.analyzer import (
    LatencyStats,
    QueueConfig,
    Targets,
    latency_stats,
    rate_range,
    size,
)
from inferno.analyzer import analyze as analyze_point
from inferno.commands.limits import check_flag
from inferno.errors import ConfigError
from inferno.io import load_system
from inferno.model import PerfModel, effective_max_batch, effective_max_queue, statistic_label
from inferno.model.units import rpm_to_rps, rps_to_rpm


def _stats(stats: LatencyStats) -> dict[str, float]:
    doc = {"mean": stats.mean, "p50": stats.p50, "p90": stats.p90, "p99": stats.p99}
    doc.update({statistic_label(p): v for p, v in stats.extra})
    return doc


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Upstream data directory (model-data.json, serviceclass-data.json, …).")
@click.option("--model", required=True, help="Model name, e.g. granite_13b.")
@click.option("--accelerator", required=True, help="Accelerator name, e.g. G2.")
@click.option("--rate-rpm", type=float, required=True, help="Arrival rate per replica (RPM, > 0).")
@click.option("--in-tokens", type=int, required=True, help="Average input tokens.")
@click.option("--out-tokens", type=int, required=True, help="Average output tokens.")
@click.option("--class", "class_name", help="Take ITL/TTFT targets (and the percentiles they "
                                            "are on) from this service class.")
@click.option("--itl-ms", type=float, default=0.0, help="ITL target (ms); overrides --class.")
@click.option("--ttft-ms", type=float, default=0.0, help="TTFT target (ms); overrides --class.")
@click.option("--percentile", type=click.FloatRange(0.0, 100.0, min_open=True, max_open=True),
              help="Put the TTFT and ITL targets on this percentile (e.g. 99) instead of the "
                   "mean or the class's percentiles, and report it.")
@click.option("--max-batch", type=int, help="Max batch N (default: model-data maxBatchSize).")
@click.option("--max-queue", type=int, help="Queue slots Q beyond the batch (default 10·N).")
@click.option("--perf-model", type=click.Choice([p.value for p in PerfModel]),
              default=PerfModel.VLLM.value, show_default=True,
              help="Service-time and latency model (classic/chunked: upstream's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def analyze(data_dir: Path, model: str, accelerator: str, rate_rpm: float, in_tokens: int,
            out_tokens: int, class_name: str | None, itl_ms: float, ttft_ms: float,
            percentile: float | None, max_batch: int | None, max_queue: int | None,
            perf_model: str, as_json: bool) -> None:
    """Queue metrics and latency percentiles of one replica at a load, and the max rate
    meeting the targets."""
    check_flag("--rate-rpm", rate_rpm, above=0, limit="MAX_RATE_RPM")  # no load: no queue
    for flag, value, low, limit in (
            ("--in-tokens", in_tokens, 0, "MAX_TOKENS"),
            ("--out-tokens", out_tokens, 1, "MAX_TOKENS"), ("--itl-ms", itl_ms, 0, None),
            ("--ttft-ms", ttft_ms, 0, None), ("--max-batch", max_batch, 1, "MAX_BATCH"),
            ("--max-queue", max_queue, 0, "MAX_QUEUE")):
        check_flag(flag, value, at_least=low, limit=limit)
    system = load_system(data_dir)
    perf = system.perf.get((model, accelerator))
    if perf is None:
        raise ConfigError(f"model-data.json: no entry for model '{model}' on accelerator "
                          f"'{accelerator}'")
    ttft_pct = itl_pct = 0.0
    if class_name:
        cls = system.classes.get(class_name)
        target = cls.targets.get(model) if cls else None
        if target is None:
            raise ConfigError(f"serviceclass-data.json: no target for model '{model}' in "
                              f"class '{class_name}'")
        itl_ms = itl_ms or target.slo_itl_ms
        ttft_ms = ttft_ms or target.slo_ttft_ms
        ttft_pct, itl_pct = target.slo_ttft_percentile, target.slo_itl_percentile
    if percentile is not None:
        ttft_pct = itl_pct = percentile
    n = effective_max_batch(max_batch, perf.max_batch_size)
    cfg = QueueConfig(max_batch=n, max_queue=effective_max_queue(max_queue, n),
                      in_tokens=in_tokens, out_tokens=out_tokens, perf=perf.perf,
                      perf_model=PerfModel(perf_model), max_num_tokens=perf.max_num_tokens)
    try:  # the queue itself: the model-data entry (all-zero perfParms) and the two sizes
        rate_range(cfg)
    except ConfigError as exc:
        raise ConfigError(f"model-data.json: model '{model}' on accelerator '{accelerator}' "
                          f"(max batch {cfg.max_batch}, max queue {cfg.max_queue}): "
                          f"{exc}") from None
    extra = tuple(sorted({p for p in (ttft_pct, itl_pct) if p and p not in (50, 90, 99)}))
    try:  # the rate: the classic model refuses one above its max rate
        metrics = analyze_point(cfg, rpm_to_rps(rate_rpm))
        ttft_stats, itl_stats = latency_stats(cfg, rpm_to_rps(rate_rpm), extra)
    except ConfigError as exc:
        raise ConfigError(f"--rate-rpm {rate_rpm:g}: {exc}") from None
    targets = Targets(ttft_ms=ttft_ms, itl_ms=itl_ms, ttft_percentile=ttft_pct,
                      itl_percentile=itl_pct)
    sizing = size(cfg, targets)
    max_rpm = (rps_to_rpm(sizing.metrics.throughput_rps)
               if sizing.feasible and sizing.metrics else 0.0)
    latency = {"ttftMs": _stats(ttft_stats), "itlMs": _stats(itl_stats)}
    doc = {"maxBatch": cfg.max_batch, "maxQueue": cfg.max_queue, "metrics": asdict(metrics),
           "latency": latency,
           "targets": {"itlMs": itl_ms, "ttftMs": ttft_ms, "itlPercentile": itl_pct,
                       "ttftPercentile": ttft_pct},
           "feasible": sizing.feasible, "maxRateRpm": max_rpm, "reason": sizing.reason}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    m = metrics
    click.echo(f"{model} on {accelerator}: N={cfg.max_batch} Q={cfg.max_queue} "
               f"L={in_tokens} m={out_tokens} ({perf_model})")
    click.echo(f"at {rate_rpm:g} RPM: throughput {rps_to_rpm(m.throughput_rps):.2f} RPM, "
               f"TTFT {m.ttft_ms:.2f} ms, ITL {m.itl_ms:.3f} ms, wait {m.wait_ms:.2f} ms, "
               f"in service {m.num_in_service:.2f}, utilisation {m.rho:.3f}, "
               f"max rate {rps_to_rpm(m.max_rate_rps):.2f} RPM")
    for name, stats in (("TTFT", latency["ttftMs"]), ("ITL", latency["itlMs"])):
        click.echo(f"  {name} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stats.items()))
    wanted = (f"ITL {statistic_label(itl_pct)} {itl_ms:g} ms / "
              f"TTFT {statistic_label(ttft_pct)} {ttft_ms:g} ms")
    if sizing.feasible:
        click.echo(f"max rate meeting {wanted}: {max_rpm:.2f} RPM per replica")
    else:
        click.echo(f"targets {wanted} cannot be met: {sizing.reason}")
