"""`inferno live`, `inferno load-noise`, `inferno emulate`: the cluster-facing commands.

Thin wrappers: settings come from the environment (upstream variable names,
docs/design/control-loop.md §1.2) overridden by the command line, and the work is done by
`live.app`, `live.load_noise` and `sim.emulate`, imported inside the commands so the core
install never imports Kubernetes, Prometheus or SimPy clients. `emulate` is the one place
where `sim` and `live` meet: the twin follows Deployments read through `live.kube`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from inferno.errors import ConfigError
from inferno.policy_names import LIVE_POLICY_NAMES, one_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferno.model.accelerator import Accelerator
    from live.kube import ManagedDeployment
    from live.placement import PlacementSettings
    from sim.emulate import Source

ENV_CYCLE_LOG = "INFERNO_CYCLE_LOG"
ENV_LOAD_INTERVAL = "INFERNO_LOAD_INTERVAL"
ENV_LOAD_ALPHA = "INFERNO_LOAD_ALPHA"


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.argument("control_period", required=False)
@click.argument("dynamic", required=False)
@click.option("--dry-run", is_flag=True, help="Decide and log; patch and export nothing.")
@click.option("--actuation", type=click.Choice(["patch", "metrics"]), default="patch",
              show_default=True, help="patch: write replicas and allocation labels; metrics: "
              "only export inferno_desired_replicas for an HPA or KEDA.")
@click.option("--policy", default="inferno", show_default=True,
              help=f"{one_of(LIVE_POLICY_NAMES)}.")
@click.option("--scale-down-window", type=float, default=None,
              help="Scale-down stabilisation window, s: scale down only to the highest "
              "recommendation of the last S s (default: the policy's, 300); inferno's "
              "load-peak window is capped at it.")
@click.option("--max-batch", type=click.IntRange(min=0), default=0,
              envvar="DEFAULT_MAX_BATCH_SIZE", show_envvar=True,
              help="Pin every server's max batch (inferno policy); 0 lets the optimizer "
              "search it.")
@click.option("--lead", type=float, default=None, help="Trend lead of the inferno policy, s: "
              "plan for observed + trend × lead on a rising load (default: the policy's; "
              "about the period plus the replica startup).")
@click.option("--tuner", type=click.Choice(["off", "ekf", "window"]), default="off",
              show_default=True, help="Learn α/β/γ online from the observed latencies and "
              "merge them into the model data every cycle.")
@click.option("--data-path", type=click.Path(path_type=Path), default=None,
              help="Static data directory [env INFERNO_DATA_PATH, default ./].")
@click.option("--host", default=None, help="Listen address of /invoke and /metrics "
              "[env CONTROLLER_HOST, default 127.0.0.1].")
@click.option("--port", default=None, help="Listen port [env CONTROLLER_PORT, default 3300].")
@click.option("--prometheus-url", default=None,
              help="Prometheus base URL [env INFERNO_PROMETHEUS_URL, default "
              "http://localhost:9090].")
@click.option("--no-prometheus", is_flag=True,
              help="Read the load labels only (a cluster without Prometheus).")
@click.option("--cycle-log", default=None, help="JSONL cycle log [env INFERNO_CYCLE_LOG, "
              "default inferno-cycles.jsonl]; - writes none.")
@click.option("--cycle-log-max-mb", type=click.FloatRange(min=0), default=100.0,
              envvar="INFERNO_CYCLE_LOG_MAX_MB", show_envvar=True, show_default=True,
              help="Rotate the cycle log at this size, MiB; 0 never rotates.")
@click.option("--cycle-log-backups", type=click.IntRange(min=1), default=5,
              envvar="INFERNO_CYCLE_LOG_BACKUPS", show_envvar=True, show_default=True,
              help="Rotated cycle logs kept (FILE.1 ... FILE.N).")
@click.option("--allow-migration", is_flag=True, envvar="INFERNO_ALLOW_MIGRATION",
              show_envvar=True, help="Let the optimizer change accelerators: the pod template's "
              "nodeSelector and GPU limit are patched (docs/live.md). Off: every server keeps "
              "its accelerator.")
@click.option("--cycle-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              envvar="INFERNO_CYCLE_TIMEOUT", show_envvar=True,
              help="Time budget of one cycle's API and Prometheus calls, s (default: the "
              "period; 30 on demand).")
@click.option("--health-periods", type=click.IntRange(min=1), default=3,
              envvar="INFERNO_HEALTH_PERIODS", show_envvar=True, show_default=True,
              help="/health fails after this many periods without a successful cycle.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              envvar="CONTROLLER_METRICS_PORT", show_envvar=True,
              help="Serve /metrics and /health on this port too, and /metrics only there "
              "(default: on --port).")
@click.option("--policy-settings", "policy_settings_file",
              type=click.Path(dir_okay=False), default=None,
              envvar="INFERNO_POLICY_SETTINGS", show_envvar=True,
              help="YAML file of the policy's settings: the keys of a scenario's "
              "policy.<name> section (docs/scenarios.md); the flags above override it.")
@click.option("--invoke-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="INFERNO_INVOKE_TOKEN_PATH", show_envvar=True,
              help="Require 'Authorization: Bearer <token in this file>' on /invoke.")
def live(control_period: str | None, dynamic: str | None, dry_run: bool, actuation: str,
         policy: str, scale_down_window: float | None, max_batch: int, lead: float | None,
         tuner: str, data_path: Path | None,
         host: str | None, port: str | None, prometheus_url: str | None, no_prometheus: bool,
         cycle_log: str | None, cycle_log_max_mb: float, cycle_log_backups: int,
         allow_migration: bool, cycle_timeout: float | None, health_periods: int,
         metrics_port: int | None, policy_settings_file: str | None,
         invoke_token_file: str | None) -> None:
    """Control the managed Deployments of a cluster: every CONTROL_PERIOD s [env
    INFERNO_CONTROL_PERIOD, default 60; 0 = on demand only] and on GET /invoke; DYNAMIC
    re-reads the static data every cycle [env INFERNO_CONTROL_DYNAMIC]. SIGTERM or Ctrl-C
    stops after the running cycle; a second one exits at once."""
    from inferno.control import resolve_controller_settings
    from live.app import DEFAULT_CYCLE_LOG, Actuation, LiveSettings, run_live
    from live.config import kube_settings_from_env, prom_settings_from_env
    from live.placement import placement_settings_from_env

    if no_prometheus and prometheus_url is not None:
        raise click.UsageError("--no-prometheus and --prometheus-url are contradictory")
    env = dict(os.environ)
    if prometheus_url is not None:
        env["INFERNO_PROMETHEUS_URL"] = prometheus_url
    controller = resolve_controller_settings(env, data_path=data_path, period_s=control_period,
                                             is_dynamic=dynamic, host=host, port=port)
    prom = None if no_prometheus else prom_settings_from_env(env)
    if prom is not None:  # no scale-down until a whole window of fresh data after an outage
        controller = replace(controller, metrics_window_s=prom.window_s)
    settings = LiveSettings(
        controller=replace(controller, dry_run=dry_run), kube=kube_settings_from_env(env),
        prom=prom,
        actuation=Actuation(actuation), policy=policy, scale_down_window_s=scale_down_window,
        max_batch=max_batch, lead_s=lead, tuner=tuner,
        cycle_log=cycle_log or env.get(ENV_CYCLE_LOG) or DEFAULT_CYCLE_LOG,
        cycle_log_max_bytes=round(cycle_log_max_mb * 2**20),
        cycle_log_backups=cycle_log_backups, allow_migration=allow_migration,
        placement=placement_settings_from_env(env), cycle_timeout_s=cycle_timeout,
        health_periods=health_periods, metrics_port=metrics_port,
        invoke_token_path=invoke_token_file, policy_settings_path=policy_settings_file)
    _show_decisions()
    cycles = run_live(settings, on_ready=lambda h, p: _echo(
        f"inferno live: GET http://{h}:{p}/invoke, /health and /metrics; SIGTERM or Ctrl-C "
        "stops"))
    _echo(f"inferno live: stopped after {cycles} periodic cycles")


def _show_decisions() -> None:
    """Decision and cycle lines (`live.report`) at default verbosity; -v shows the rest."""
    report = logging.getLogger("live.report")
    if not report.isEnabledFor(logging.INFO):
        report.setLevel(logging.INFO)


def _number(text: str | None, env_name: str, default: float, source: str) -> float:
    raw = text if text is not None else os.environ.get(env_name) or None
    if raw is None:
        return default
    where = source if text is not None else env_name
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {raw!r}") from None
    if not (math.isfinite(value) and value >= 0) or (value == 0 and "INTERVAL" in where):
        raise ConfigError(f"{where}: expected a finite number "
                          f"{'> 0' if 'INTERVAL' in where else '>= 0'}, got {raw!r}")
    return value


@click.command("load-noise")
@click.argument("interval", required=False)
@click.argument("alpha", required=False)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the perturbations (same seed and labels: same walk).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many passes (default: until SIGTERM or Ctrl-C).")
def load_noise(interval: str | None, alpha: str | None, seed: int, count: int | None) -> None:
    """Every INTERVAL s [env INFERNO_LOAD_INTERVAL, default 60] add N(0, (ALPHA × original)²)
    [env INFERNO_LOAD_ALPHA, default 0.5] to each managed Deployment's load labels."""
    from inferno.control import LoadNoiseSettings
    from live.app import stop_on_signals
    from live.config import kube_settings_from_env, load_api_client
    from live.load_noise import ClusterLoadNoise

    settings = LoadNoiseSettings(
        interval_s=_number(interval, ENV_LOAD_INTERVAL, 60.0, "argument INTERVAL"),
        alpha=_number(alpha, ENV_LOAD_ALPHA, 0.5, "argument ALPHA"))
    kube = kube_settings_from_env(os.environ)
    api_client = load_api_client(kube)
    stop = threading.Event()
    try:
        emulator = ClusterLoadNoise(api_client, kube, settings, seed=seed)
        with stop_on_signals(stop.set):
            passes = emulator.run(stop, max_passes=count)
    finally:
        api_client.close()
    _echo(f"inferno load-noise: {passes} passes")


def follow_deployments(read: Callable[[], list[ManagedDeployment]],
                       accelerators: Mapping[str, Accelerator] | None = None,
                       placement: PlacementSettings | None = None) -> Source:
    """The emulation's desired state: each managed Deployment's spec and labels.

    The pods run where the pod template places them (`live.placement.running_accelerator`),
    as on a cluster; the accelerator label counts only for a template that names no type. A
    template naming an unknown accelerator is left out (the emulation keeps what it had).
    """
    from live.placement import PlacementSettings, running_accelerator
    from sim.emulate import DesiredDeployment

    where = placement or PlacementSettings()

    def accelerator(d: ManagedDeployment) -> str | None:
        try:
            running = running_accelerator(d.template, accelerators or {}, where)
        except ConfigError as exc:
            logging.getLogger(__name__).warning("emulate: Deployment %s: %s", d.ref, exc)
            return None
        return running or d.labels.accelerator

    def desired() -> dict[tuple[str, str], DesiredDeployment]:
        found = {}
        for d in read():
            acc = accelerator(d)
            if acc is None:
                continue
            found[d.namespace, d.deployment] = DesiredDeployment(
                namespace=d.namespace, deployment=d.deployment, model=d.labels.model,
                accelerator=acc, replicas=d.desired_replicas,
                max_batch=d.labels.max_batch, load_rpm=d.labels.load_rpm or 0.0,
                in_tokens=d.labels.load_in_tokens, out_tokens=d.labels.load_out_tokens)
        return found

    return desired


@click.command()
@click.option("--data-path", type=click.Path(path_type=Path), default=None,
              help="Data directory with model and accelerator data [env INFERNO_DATA_PATH, "
              "default ./].")
@click.option("--targets-file", type=click.Path(path_type=Path),
              default=Path("inferno-emulate-targets.json"), show_default=True,
              help="Prometheus file_sd JSON listing the emulated pods.")
@click.option("--prometheus-config", type=click.Path(path_type=Path), default=None,
              help="Also write a prometheus.yml that scrapes the targets file.")
@click.option("--scrape-interval", type=float, default=1.0, show_default=True,
              help="Scrape interval of --prometheus-config, s.")
@click.option("--speedup", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall second.")
@click.option("--poll", "poll_s", type=float, default=2.0, show_default=True,
              help="Wall s between reads of the Deployments.")
@click.option("--startup", "startup_s", type=float, default=10.0, show_default=True,
              help="Startup delay of a new replica, simulated s.")
@click.option("--tokens", type=click.Choice(["fixed", "exponential"]), default="fixed",
              show_default=True, help="Token length distribution around the load labels.")
@click.option("--capacity", is_flag=True, help="Limit replicas to capacity-data.json.")
@click.option("--write-status", is_flag=True, help="Report replica counts into the "
              "Deployments' status (API emulators only, never a real cluster).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=float, default=None,
              help="Stop after this many wall seconds (default: SIGTERM or Ctrl-C).")
@click.option("--openai-port", type=int, default=None, help="Also serve the OpenAI API "
              "(/<namespace>/<deployment>/v1/completions, chat/completions, models) on this "
              "port; 0 picks a free one (default: off).")
@click.option("--max-connections", type=int, default=1024, show_default=True,
              help="OpenAI API: open connections served; beyond, 503.")
@click.option("--max-requests", type=int, default=512, show_default=True,
              help="OpenAI API: generation requests in flight; beyond, 429.")
@click.option("--max-model-len", type=int, default=32768, show_default=True,
              help="OpenAI API: context length (prompt + output tokens) of the served models.")
def emulate(data_path: Path | None, targets_file: Path, prometheus_config: Path | None,
            scrape_interval: float, speedup: float, poll_s: float, startup_s: float,
            tokens: str, capacity: bool, write_status: bool, host: str, port: int, seed: int,
            duration: float | None, openai_port: int | None, max_connections: int,
            max_requests: int, max_model_len: int) -> None:
    """Emulate the managed Deployments' vLLM pods with the twin (no GPU): replicas follow the
    API with the startup delay, pods run on the accelerator their pod template places them on
    (else the label's), load follows the load labels (plus the requests of OpenAI clients with
    --openai-port), metrics are served for Prometheus. KUBECONFIG, WATCH_NAMESPACE and
    INFERNO_ACCELERATOR_* as for `inferno live`."""
    from inferno.commands.limits import check_flag, check_output_files

    for flag, value in (("--scrape-interval", scrape_interval), ("--speedup", speedup),
                        ("--poll", poll_s), ("--duration", duration)):
        check_flag(flag, value, above=0.0)
    check_flag("--startup", startup_s, at_least=0.0, limit="MAX_SIM_DURATION_S")
    for flag, count in (("--max-connections", max_connections),
                        ("--max-requests", max_requests)):
        check_flag(flag, count, at_least=1)
    check_flag("--seed", seed, at_least=0)
    check_flag("--max-model-len", max_model_len, at_least=2, limit="MAX_TOKENS")
    for flag, number in (("--port", port), ("--openai-port", openai_port)):
        if number is not None and not 0 <= number <= 65535:
            raise ConfigError(f"{flag}: expected a port in 0..65535, got {number}")
    check_output_files(targets_file=targets_file, prometheus_config=prometheus_config)
    import yaml

    from inferno.io import load_static_data
    from live.app import stop_on_signals
    from live.config import kube_settings_from_env, load_api_client
    from live.emulate import DeploymentReader, DeploymentStatusWriter
    from live.placement import placement_settings_from_env
    from sim.deployment import StartupDelay
    from sim.emulate import ClusterEmulation, EmulationSettings, scrape_config
    from sim.openai_server import OpenAIServer, OpenAISettings

    path = data_path or Path(os.environ.get("INFERNO_DATA_PATH") or ".")
    system = load_static_data(path)
    settings = EmulationSettings(
        speedup=speedup, poll_s=poll_s, startup=StartupDelay(mean_s=startup_s),
        token_kind=tokens, capacity=dict(system.capacity) if capacity else None, host=host,
        port=port, seed=seed)
    openai = None if openai_port is None else OpenAISettings(
        host=host, port=openai_port, max_connections=max_connections,
        max_requests=max_requests, max_model_len=max_model_len, seed=seed)
    if prometheus_config is not None:
        prometheus_config.write_text(yaml.safe_dump(scrape_config(
            targets_file.resolve(), scrape_interval_s=scrape_interval)), encoding="utf-8")
    kube = kube_settings_from_env(os.environ)
    api_client = load_api_client(kube)
    report = DeploymentStatusWriter(api_client, kube) if write_status else None
    source = follow_deployments(DeploymentReader(api_client, kube), system.accelerators,
                                placement_settings_from_env(os.environ))
    emulation = ClusterEmulation(system, source, settings, targets_file=targets_file,
                                 report=report)
    server = None if openai is None else OpenAIServer(emulation, openai)
    try:
        with stop_on_signals(emulation.request_stop):
            h, p = emulation.start()
            _echo(f"inferno emulate: {len(emulation.pods())} pods on "
                  f"http://{h}:{p}/metrics/<namespace>/<pod>, targets in {targets_file}")
            if server is not None:
                h, p = server.start()
                _echo(f"inferno emulate: OpenAI API on http://{h}:{p}/<namespace>/"
                      f"<deployment>/v1")
            emulation.wait(duration)
    finally:
        if server is not None:
            server.stop()
        emulation.stop()
        api_client.close()
    if emulation.error is not None:
        raise click.ClickException(f"emulation failed: {emulation.error!r}")
    _echo("inferno emulate: stopped")
