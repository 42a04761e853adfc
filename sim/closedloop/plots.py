"""PNG plots of a closed-loop run: load and replicas, latency vs SLO, cost over time.

Matplotlib with the Agg backend, imported on use so a run without plots never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from inferno.model.units import S_PER_HR, S_PER_MIN
from sim.request import RequestStatus

if TYPE_CHECKING:
    from sim.closedloop.summary import RunResult


def _figure(rows: int, cols: int, width: float = 11.0, height: float = 2.6) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas on save

    fig = Figure(figsize=(width, max(height * rows, 3.0)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _minutes(t_s: ArrayLike) -> np.ndarray:
    return np.asarray(t_s, dtype=float) / S_PER_MIN


def plot_load_replicas(result: RunResult, path: Path) -> None:
    """Offered load (per-minute bins) and desired/ready replicas per server over time."""
    names = result.scenario.server_names
    fig, axes = _figure(len(names), 1)
    trace = result.workload.frame()
    ts = result.timeseries
    end = result.scenario.duration_s
    edges = np.arange(0.0, end + S_PER_MIN, S_PER_MIN)
    for ax, name in zip(axes[:, 0], names, strict=True):
        counts, _ = np.histogram(trace.loc[trace["server"] == name, "arrival_s"], bins=edges)
        ax.step(_minutes(edges[:-1]), counts, where="post", color="tab:blue",
                label="offered (req/min)")
        ax.set_ylabel("req/min")
        ax.set_title(name, fontsize=9, loc="left")
        right = ax.twinx()
        mine = ts[ts["server"] == name]
        right.step(_minutes(mine["time_s"]), mine["desired"], where="post", color="tab:red",
                   label="desired replicas")
        right.step(_minutes(mine["time_s"]), mine["ready"], where="post", color="tab:orange",
                   linestyle="--", label="ready replicas")
        right.set_ylabel("replicas")
        right.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("time (min)")
    fig.suptitle(f"{result.scenario.name}: load and replicas ({result.policy})")
    fig.savefig(path, dpi=100)


def plot_latency(result: RunResult, path: Path) -> None:
    """Per-minute mean and p90 TTFT and ITL (by arrival time) against the class SLO; without
    a request table, the window means the controller observed at each cycle."""
    if result.requests is None:
        _plot_observed_latency(result, path)
        return
    names = result.scenario.server_names
    fig, axes = _figure(len(names), 2)
    df = result.requests
    done = df[df["status"] == RequestStatus.DONE.value].copy()
    done["minute"] = np.floor(done["arrival_s"] / S_PER_MIN)
    for row, name in enumerate(names):
        mine = done[done["server"] == name]
        slo = df.loc[df["server"] == name, ["slo_ttft_ms", "slo_itl_ms"]]
        for col, (key, label) in enumerate((("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL (ms)"))):
            ax = axes[row, col]
            grouped = mine.groupby("minute")[key]
            mean, p90 = grouped.mean(), grouped.quantile(0.9)
            ax.plot(mean.index, mean.to_numpy(), color="tab:blue", label="mean")
            ax.plot(p90.index, p90.to_numpy(), color="tab:blue", linestyle=":", label="p90")
            target = float(slo.iloc[0]["slo_" + key]) if len(slo) else 0.0
            _finish_latency_axes(ax, target, label, name)
    _finish_latency_figure(fig, axes, "arrival time (min)",
                           f"{result.scenario.name}: latency vs SLO ({result.policy})", path)


def _finish_latency_axes(ax: Any, target_ms: float, label: str, name: str) -> None:
    """SLO line (when there is a target), log scale, labels and legend of one latency panel."""
    if target_ms > 0:
        ax.axhline(target_ms, color="tab:red", linestyle="--", label="SLO")
    ax.set_yscale("log")
    ax.set_ylabel(label)
    ax.set_title(name, fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="upper left")


def _finish_latency_figure(fig: Any, axes: Any, xlabel: str, title: str, path: Path) -> None:
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def _plot_observed_latency(result: RunResult, path: Path) -> None:
    names = result.scenario.server_names
    fig, axes = _figure(len(names), 2)
    for row, name in enumerate(names):
        mine = [(c.time_s, s) for c in result.cycles for s in c.servers if s.name == name]
        t = _minutes(np.asarray([time_s for time_s, _ in mine], dtype=float))
        for col, (key, label) in enumerate((("ttft", "TTFT (ms)"), ("itl", "ITL (ms)"))):
            ax = axes[row, col]
            mean = [getattr(s, f"{key}_ms") for _, s in mine]
            ax.plot(t, [np.nan if v is None else v for v in mean], color="tab:blue",
                    label="window mean (observed)")
            stat = [getattr(s, f"{key}_stat_ms") for _, s in mine]
            if any(v is not None for v in stat) and any(
                    getattr(s, f"slo_{key}_percentile") for _, s in mine):
                ax.plot(t, [np.nan if v is None else v for v in stat], color="tab:blue",
                        linestyle=":", label="window percentile")
            target = next((getattr(s, f"slo_{key}_ms") for _, s in mine), 0.0) or 0.0
            _finish_latency_axes(ax, target, label, name)
    _finish_latency_figure(fig, axes, "time (min)",
                           f"{result.scenario.name}: observed latency vs SLO ({result.policy})",
                           path)


def plot_cost(result: RunResult, path: Path) -> None:
    """Cost rate per server (stacked) and cumulative cost over time."""
    fig, axes = _figure(1, 2, height=3.5)
    ts = result.timeseries
    left, right = axes[0]
    rates = []
    times = None
    for name in result.scenario.server_names:
        mine = ts[ts["server"] == name]
        t = mine["time_s"].to_numpy()
        cost = mine["cost"].to_numpy()
        rate = np.diff(cost) / np.maximum(np.diff(t), 1e-12) * S_PER_HR
        rates.append(rate)
        times = t[:-1]
        right.plot(_minutes(t), cost, label=name)
    if times is not None and len(times):
        left.stackplot(_minutes(times), *rates, labels=result.scenario.server_names, step="post")
    left.set_ylabel("cost per hour")
    left.set_xlabel("time (min)")
    left.legend(fontsize=7, loc="upper left")
    right.set_ylabel("cumulative cost")
    right.set_xlabel("time (min)")
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{result.scenario.name}: cost ({result.policy}), total "
                 f"{result.summary.cost:.1f}")
    fig.savefig(path, dpi=100)
