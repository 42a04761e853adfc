"""`inferno calibrate`: fit the iteration model of one (model, accelerator) to benchmarks.

The fit itself is `inferno.tuner.calibrate`, the file readers `inferno.tuner.benchfile`. The
twin predictor (closed-loop rows by default, every row with ``--predictor twin``) replays rows
in the SimPy twin, so the twin package is imported inside the command body only (the core
install never needs SimPy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from inferno.commands.limits import check_flag
from inferno.io import safe
from inferno.model import (
    DEFAULT_MAX_NUM_TOKENS,
    Accelerator,
    ModelPerf,
    PerfModel,
    PerfParms,
    System,
    effective_max_batch,
)
from inferno.tuner import calibrate as cal
from inferno.tuner.benchfile import BenchRow

EXIT_POOR_FIT = 3
"""Exit code of a fit that is computed but not trusted (large residual, an interval that
reaches zero); nothing is merged unless --accept-poor-fit."""


@click.command()
@click.argument("bench_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", required=True, help="Model name, e.g. granite_13b.")
@click.option("--accelerator", required=True, help="Accelerator name, e.g. A100.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="Data directory: start point (prior), max batch and token budget.")
@click.option("--output", type=click.Path(path_type=Path),
              help="model-data.json to merge the result into (created from --data's if new).")
@click.option("--max-batch", type=int, help="N for rows without max_batch "
              "(default: model-data maxBatchSize, else 256).")
@click.option("--fit", "fit_names", default=",".join(cal.DEFAULT_FIT), show_default=True,
              help="Parameters to fit, comma-separated: alpha, beta, gamma, frontend, "
              "frontend_per_token, stream, beta_high (piecewise model data only).")
@click.option("--predictor", type=click.Choice(["auto", "analyzer", "twin"]), default="auto",
              show_default=True, help="auto: the analyzer for open-loop rows and the twin for "
              "closed-loop rows (the analyzer's closed-loop model cannot identify them); "
              "twin: the twin for every row; analyzer: the analyzer only.")
@click.option("--perf-model", type=click.Choice([m.value for m in PerfModel]),
              default=PerfModel.VLLM.value, show_default=True,
              help="The analyzer's model for the fit (the optimizer's default is vllm).")
@click.option("--num-requests", type=int, default=1000, show_default=True,
              help="Requests per row replayed by the twin predictor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Twin predictor seed.")
@click.option("--max-condition-number", type=float, default=1000.0, show_default=True,
              help="Directions less identified than this are held at the prior "
              "(0: fit every direction).")
@click.option("--max-rms", type=float, default=0.10, show_default=True,
              help="Relative RMS residual above which the fit is not trusted (exit 3).")
@click.option("--accept-poor-fit", is_flag=True,
              help="Merge even when the fit is not trusted (still reported).")
@click.option("--force", is_flag=True, help="Replay more than MAX_SIM_REQUESTS_KEPT requests per "
              "row (docs/scenarios.md, Limits).")
def calibrate(bench_files: tuple[Path, ...], model: str, accelerator: str,
              data_dir: Path | None, output: Path | None, max_batch: int | None,
              fit_names: str, predictor: str, perf_model: str, num_requests: int, seed: int,
              max_condition_number: float, max_rms: float, accept_poor_fit: bool,
              force: bool) -> None:
    """Fit the iteration model of one (model, accelerator) to BENCH_FILES: our CSV (as
    `sim bench --csv` writes it), `vllm bench serve --save-result` JSON or GuideLLM report
    JSON. Rows with preemptions or saturated open-loop rows are dropped with a message.
    Exit 0: fitted (and merged with --output); 2: bad input; 3: the fit is not trusted (RMS
    residual above --max-rms or a fitted parameter's 95 % interval reaching zero), nothing
    merged unless --accept-poor-fit."""
    from inferno.tuner.benchfile import read_bench_files

    check_flag("--num-requests", num_requests, at_least=1, limit="MAX_SIM_REQUESTS_KEPT",
               force=force)
    check_flag("--max-batch", max_batch, at_least=1, limit="MAX_BATCH")
    check_flag("--seed", seed, at_least=0)
    check_flag("--max-condition-number", max_condition_number, at_least=0)
    check_flag("--max-rms", max_rms, at_least=0)
    if output is not None:  # before the fit: a bad --output costs no work
        safe.check_output_file(output, "--output")
        cal.model_data_document(output, data_dir / "model-data.json" if data_dir else None)
    rows, dropped = cal.screen(read_bench_files(list(bench_files)))
    for message in dropped:
        click.echo(message, err=True)
    system, entry = _model_data(data_dir, model, accelerator)
    n = effective_max_batch(max_batch, entry.max_batch_size if entry else 0)
    budget = entry.max_num_tokens if entry else DEFAULT_MAX_NUM_TOKENS
    prior = entry.perf if entry is not None and not entry.perf.is_zero else PerfParms(
        alpha_ms=cal.DEFAULT_SEED[0], beta_ms=cal.DEFAULT_SEED[1], gamma_ms=cal.DEFAULT_SEED[2])
    space = cal.ParamSpace.of([f.strip() for f in fit_names.split(",") if f.strip()], prior)
    model_kind = PerfModel(perf_model)

    def refine_for(sp: cal.ParamSpace) -> cal.Predictor | None:
        return _refine(rows, predictor, sp, model=model, accelerator=accelerator,
                       system=system, max_batch=n, max_num_tokens=budget,
                       num_requests=num_requests, seed=seed, perf_model=model_kind)

    closed = np.array([r.is_closed_loop for r in rows])
    result = cal.calibrate_supported(rows, space=space, max_batch=n, max_num_tokens=budget,
                                     refine_for=refine_for, perf_model=model_kind,
                                     max_condition_number=max_condition_number,
                                     analyzer_rows=~closed if predictor == "auto" else None)
    result = dataclasses.replace(result, dropped=dropped)
    click.echo(cal.format_report(result, model, accelerator))
    problems = result.problems(max_rms)
    for problem in problems:
        click.echo(f"poor fit: {problem}", err=True)
    if output is not None and (not problems or accept_poor_fit):
        cal.merge_model_data(output, data_dir / "model-data.json" if data_dir else None,
                             model, accelerator, result.params, max_batch=n)
        click.echo(f"merged into {output}")
    if problems and not accept_poor_fit:
        raise click.exceptions.Exit(EXIT_POOR_FIT)


def _refine(rows: Sequence[BenchRow], predictor: str, space: cal.ParamSpace, *,
            model: str, accelerator: str, system: System | None, max_batch: int,
            max_num_tokens: int, num_requests: int, seed: int,
            perf_model: PerfModel) -> cal.Predictor | None:
    """The predictor that refines the analyzer fit: None, the twin on every row, or (auto)
    the twin on the closed-loop rows and the analyzer on the others."""
    closed = np.array([r.is_closed_loop for r in rows])
    if predictor == "analyzer" or (predictor == "auto" and not closed.any()):
        return None
    chosen = rows if predictor == "twin" else [r for r in rows if r.is_closed_loop]
    twin = twin_predictor(chosen, model=model, accelerator=accelerator, system=system,
                          max_batch=max_batch, max_num_tokens=max_num_tokens,
                          num_requests=num_requests, seed=seed, space=space)
    if predictor == "twin":
        return twin
    analyzer = cal.BenchModel(rows, max_batch=max_batch, max_num_tokens=max_num_tokens,
                              space=space, perf_model=perf_model).predict
    return cal.combine(analyzer, twin, closed)


def _model_data(data_dir: Path | None, model: str, accelerator: str,
                ) -> tuple[System | None, ModelPerf | None]:
    if data_dir is None:
        return None, None
    from inferno.io import load_system

    system = load_system(data_dir)
    return system, system.perf.get((model, accelerator))


def twin_predictor(rows: Sequence[BenchRow], *, model: str, accelerator: str,
                   system: System | None, max_batch: int, max_num_tokens: int,
                   num_requests: int, seed: int,
                   space: cal.ParamSpace | None = None) -> cal.Predictor:
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
        for p, row in enumerate(x):
            if not np.all(row > 0):
                continue
            perf = (space.perf(row) if space is not None
                    else PerfParms(alpha_ms=row[0], beta_ms=row[1], gamma_ms=row[2]))
            entry = ModelPerf(model=model, accelerator=accelerator, max_batch_size=max_batch,
                              max_num_tokens=max_num_tokens, perf=perf)
            world = dataclasses.replace(base, perf={**base.perf,
                                                    (model, accelerator): entry})
            for i, cfg in enumerate(configs):
                res = run_bench(world, cfg)
                out[:, p, i] = (res.ttft_ms.mean, res.itl_ms.mean, res.throughput_rps)
        return out[0], out[1], out[2]

    return predict
