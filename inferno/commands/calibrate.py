"""`inferno calibrate`: fit α, β, γ of one (model, accelerator) to benchmark measurements.

The fit itself is `inferno.tuner.calibrate`. With ``--predictor twin`` the analyzer fit is
refined against the SimPy twin replaying every benchmark row, so the twin package is imported
inside the command body only (the core install never needs SimPy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_NUM_TOKENS, Accelerator, ModelPerf, PerfParms, System
from inferno.tuner import calibrate as cal


@click.command()
@click.argument("bench_csv", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="Model name, e.g. granite_13b.")
@click.option("--accelerator", required=True, help="Accelerator name, e.g. A100.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="Data directory: start point, max batch and token budget from model data.")
@click.option("--output", type=click.Path(path_type=Path),
              help="model-data.json to merge the result into (created from --data's if new).")
@click.option("--max-batch", type=int, help="N for rows without max_batch "
              "(default: model-data maxBatchSize, else 256).")
@click.option("--predictor", type=click.Choice(["analyzer", "twin"]), default="analyzer",
              show_default=True, help="Model the parameters are fitted for.")
@click.option("--num-requests", type=int, default=1000, show_default=True,
              help="Requests per row replayed by the twin predictor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Twin predictor seed.")
@click.option("--max-condition-number", type=float, default=1000.0, show_default=True,
              help="Refuse fits less identifiable than this (0 disables the check).")
def calibrate(bench_csv: Path, model: str, accelerator: str, data_dir: Path | None,
              output: Path | None, max_batch: int | None, predictor: str, num_requests: int,
              seed: int, max_condition_number: float) -> None:
    """Fit α, β, γ to BENCH_CSV, print them with 95 % intervals, optionally merge them."""
    rows = cal.read_bench_csv(bench_csv)
    system, entry = _model_data(data_dir, model, accelerator)
    n = max_batch or (entry.max_batch_size if entry else 0) or cal.DEFAULT_MAX_BATCH
    budget = entry.max_num_tokens if entry else DEFAULT_MAX_NUM_TOKENS
    refine = (twin_predictor(rows, model=model, accelerator=accelerator, system=system,
                             max_batch=n, max_num_tokens=budget, num_requests=num_requests,
                             seed=seed) if predictor == "twin" else None)
    result = cal.calibrate(rows, start=entry.perf if entry else None, max_batch=n,
                           max_num_tokens=budget, refine=refine)
    click.echo(cal.format_report(result, model, accelerator))
    if not result.is_identifiable(max_condition_number):
        raise ConfigError(f"{bench_csv}: the rows do not identify alpha, beta, gamma "
                          f"(condition number {result.kappa:.3g} > {max_condition_number:g}); "
                          f"add rows with other token shapes or loads")
    if output is not None:
        cal.merge_model_data(output, data_dir / "model-data.json" if data_dir else None,
                             model, accelerator, result.params, max_batch=n)
        click.echo(f"merged into {output}")


def _model_data(data_dir: Path | None, model: str, accelerator: str,
                ) -> tuple[System | None, ModelPerf | None]:
    if data_dir is None:
        return None, None
    from inferno.io import load_system

    system = load_system(data_dir)
    return system, system.perf.get((model, accelerator))


def twin_predictor(rows: Sequence[cal.BenchRow], *, model: str, accelerator: str,
                   system: System | None, max_batch: int, max_num_tokens: int,
                   num_requests: int, seed: int) -> cal.Predictor:
    """Mean TTFT, ITL and throughput of the twin replaying each row at given parameters."""
    from sim.bench import BenchConfig, run_bench

    base = system or System(accelerators={accelerator: Accelerator(name=accelerator,
                                                                   type=accelerator)})
    configs = [BenchConfig(
        model=model, accelerator=accelerator, in_tokens=round(r.in_tokens),
        out_tokens=round(r.out_tokens), concurrency=r.concurrency, rate_rps=r.rate_rps,
        max_batch=r.max_batch or max_batch, replicas=r.replicas, num_requests=num_requests,
        seed=seed) for r in rows]

    def predict(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.atleast_2d(params)
        out = np.full((3, x.shape[0], len(configs)), np.inf)
        for p, (alpha, beta, gamma) in enumerate(x):
            if not (alpha > 0 and beta > 0 and gamma > 0):
                continue
            entry = ModelPerf(model=model, accelerator=accelerator, max_batch_size=max_batch,
                              max_num_tokens=max_num_tokens,
                              perf=PerfParms(alpha_ms=alpha, beta_ms=beta, gamma_ms=gamma))
            world = dataclasses.replace(base, perf={**base.perf,
                                                    (model, accelerator): entry})
            for i, cfg in enumerate(configs):
                res = run_bench(world, cfg)
                out[:, p, i] = (res.ttft_ms.mean, res.itl_ms.mean, res.throughput_rps)
        return out[0], out[1], out[2]

    return predict
