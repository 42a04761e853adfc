"""Execution of a sweep's runs: local processes by default, a Dask cluster on request.

Each job is self-contained (the resolved Scenario and a policy name) and returns a small
picklable `Outcome` (the summary and the per-cycle table), so the same `run_job` serves
`concurrent.futures` workers and Dask workers. Local workers use the *spawn* start method: a
worker inherits no state from the parent, so a run gives the same result in a worker as in
process. Outcomes come back in job order whatever the completion order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.closedloop.record import cycles_frame
from sim.closedloop.run import run_scenario
from sim.scenario import Scenario


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    run_id: str
    scenario: Scenario
    """Fully resolved, with the run's policy and seed."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Outcome:
    run_id: str
    summary: dict[str, Any]
    """summary.json of the run."""
    cycles: pd.DataFrame
    """`sim.closedloop.run.cycles_frame` of the run."""
    wall_s: float


def run_job(job: Job) -> Outcome:
    """Run one job (in any process)."""
    result = run_scenario(job.scenario, requests_table=False)  # memory: the fleet's, not time's
    return Outcome(run_id=job.run_id, summary=result.summary.to_dict(),
                   cycles=cycles_frame(result.cycles), wall_s=result.wall_s)


def execute(jobs: Sequence[Job], *, workers: int | None = None,
            scheduler: str | None = None,
            on_done: Callable[[int, int], None] | None = None) -> list[Outcome]:
    """Run every job; outcomes in job order.

    Parameters
    ----------
    workers : int, optional
        Local worker processes (default: CPU count; 1 runs in this process, no pool).
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://127.0.0.1:8786``); the jobs run there instead.
    on_done : callable, optional
        ``on_done(num_done, num_jobs)`` after each completed job.
    """
    if scheduler is not None:
        return _on_dask(jobs, scheduler, on_done)
    num = workers if workers is not None else (os.cpu_count() or 1)
    if num <= 1 or len(jobs) <= 1:
        outcomes = []
        for i, job in enumerate(jobs):
            outcomes.append(run_job(job))
            if on_done is not None:
                on_done(i + 1, len(jobs))
        return outcomes
    results: dict[int, Outcome] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(num, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(len(results), len(jobs))
    return [results[i] for i in range(len(jobs))]


def _on_dask(jobs: Sequence[Job], address: str,
             on_done: Callable[[int, int], None] | None) -> list[Outcome]:
    from distributed import Client
    from distributed import as_completed as dask_completed

    with Client(address, set_as_default=False) as client:
        futures = client.map(run_job, list(jobs), pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        results: dict[int, Outcome] = {}
        for future in dask_completed(futures, loop=client.loop):
            results[index[future.key]] = future.result()
            if on_done is not None:
                on_done(len(results), len(jobs))
    return [results[i] for i in range(len(jobs))]
