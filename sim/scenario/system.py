"""Data derived from a scenario: its static data (restricted, overridden and cross-checked),
its load profile as load-emulator phases, and the controller's scaled targets and parameters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from inferno.control.load_noise import LoadPhase
from inferno.errors import ConfigError
from inferno.io import apply_overrides, load_static_data
from inferno.io.yamlbind import describe, file_prefix, join_path, wrap
from inferno.model import ModelTarget, ServiceClass, System
from sim.scenario.schema import ClassSpec, PerfScaleSpec, ProfileSpec, Scenario


def profile_phases(profile: ProfileSpec, duration_s: float) -> tuple[LoadPhase, ...]:
    """The profile as load-emulator phases covering `duration_s` (diurnal as linear pieces)."""
    if profile.diurnal is None:
        return profile.phases
    d = profile.diurnal
    piece_s = d.period_s / d.pieces
    num = max(1, math.ceil(duration_s / piece_s))

    def m(t: float) -> float:
        return 1.0 + d.amplitude * math.sin(2.0 * math.pi * t / d.period_s)

    return tuple(LoadPhase(duration_s=piece_s, ratio=m((k + 1) * piece_s) / m(k * piece_s))
                 for k in range(num))


def scaled_targets(system: System, scale: float) -> System:
    """`system` with every class's ITL and TTFT targets multiplied by `scale`."""
    if scale == 1.0:
        return system
    classes = {
        name: dataclasses.replace(c, targets={
            model: dataclasses.replace(t, slo_itl_ms=t.slo_itl_ms * scale,
                                       slo_ttft_ms=t.slo_ttft_ms * scale)
            for model, t in c.targets.items()})
        for name, c in system.classes.items()}
    return dataclasses.replace(system, classes=classes)


def scaled_perf(system: System, scale: PerfScaleSpec) -> System:
    """`system` with α, β, γ of every (model, accelerator) multiplied by `scale`."""
    if scale.is_identity:
        return system
    perf = {key: dataclasses.replace(p, perf=dataclasses.replace(
        p.perf, alpha_ms=p.perf.alpha_ms * scale.alpha, beta_ms=p.perf.beta_ms * scale.beta,
        gamma_ms=p.perf.gamma_ms * scale.gamma)) for key, p in system.perf.items()}
    return dataclasses.replace(system, perf=perf)


def _with_classes(system: System, specs: Mapping[str, ClassSpec]) -> dict[str, ServiceClass]:
    """The data file's classes with the scenario's classes and targets laid over them."""
    classes = dict(system.classes)
    for name, spec in specs.items():
        base = classes.get(name, ServiceClass(name=name))
        targets = dict(base.targets)
        for model, t in spec.targets.items():
            targets[model] = ModelTarget(
                model=model, slo_itl_ms=t.itl_ms, slo_ttft_ms=t.ttft_ms, slo_tps=t.tps,
                slo_ttft_percentile=t.ttft_percentile, slo_itl_percentile=t.itl_percentile)
        priority = base.priority if spec.priority is None else spec.priority
        classes[name] = ServiceClass(name=name, priority=priority, targets=targets)
    return classes


def scenario_system(scenario: Scenario) -> System:
    """The static data the scenario names, restricted and overridden, with every cross
    reference of the scenario checked (servers' models, accelerators and classes)."""
    where = file_prefix(scenario.source)
    if not scenario.data.is_dir():  # named as the scenario's key, not only as a directory
        raise ConfigError(f"{where}data: {scenario.data}: not a directory")
    system = load_static_data(scenario.data)
    if scenario.accelerators:
        for i, name in enumerate(scenario.accelerators):
            if name not in system.accelerators:
                raise ConfigError(f"{where}accelerators[{i}]: unknown accelerator "
                                  f"{describe(name)}; known: {', '.join(system.accelerators)}")
        keep = set(scenario.accelerators)
        system = dataclasses.replace(
            system, accelerators={k: v for k, v in system.accelerators.items() if k in keep},
            perf={k: v for k, v in system.perf.items() if k[1] in keep})
    if scenario.capacity is not None:
        types_ = sorted({a.type for a in system.accelerators.values()})
        for acc_type in scenario.capacity:
            if acc_type not in types_:
                raise ConfigError(f"{where}{join_path('capacity', acc_type)}: unknown "
                                  "accelerator type; "
                                  f"known: {', '.join(types_)}")
        system = dataclasses.replace(system, capacity=dict(scenario.capacity))
    if scenario.optimizer:
        settings = wrap(lambda: apply_overrides(system.settings, scenario.optimizer),
                         scenario.source, "optimizer")
        system = dataclasses.replace(system, settings=settings)
    if scenario.classes:
        system = dataclasses.replace(system, classes=_with_classes(system, scenario.classes))
    for i, server in enumerate(scenario.servers):
        at = f"{where}servers[{i}]"
        if server.model not in system.models:
            raise ConfigError(f"{at}.model: unknown model {describe(server.model)}; known: "
                              f"{', '.join(system.models)}")
        if server.accelerator not in system.accelerators:
            raise ConfigError(f"{at}.accelerator: unknown accelerator "
                              f"{describe(server.accelerator)}; known: "
                              f"{', '.join(system.accelerators)}")
        if (server.model, server.accelerator) not in system.perf:
            raise ConfigError(f"{at}.accelerator: model {describe(server.model)} has no "
                              f"performance data on {describe(server.accelerator)}")
        service_class = system.classes.get(server.class_name)
        if service_class is None:
            raise ConfigError(f"{at}.class: unknown service class {describe(server.class_name)}; "
                              f"known: {', '.join(system.classes)}")
        if server.model not in service_class.targets:
            raise ConfigError(f"{at}.class: class {describe(server.class_name)} has no target for "
                              f"model {describe(server.model)}")
    return system
