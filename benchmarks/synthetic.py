"""Synthetic optimizer inputs at scale, built from the sample-large catalog (fixed seed).

All 21 accelerators and every model of sample-data/large, its three service classes,
maxQueueSize 64, loads uniform in 10–600 RPM, input/output tokens uniform in 128–2048.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from inferno.io import load_system
from inferno.model import Allocation, Load, Server, System

LARGE = Path(__file__).resolve().parent.parent / "sample-data" / "large"


def synthetic_system(num_servers: int, seed: int = 42, *, capacity_scale: float = 3.0) -> System:
    """``num_servers`` servers over the sample-large catalog.

    Capacity is sample-large's, scaled by the number of servers and by ``capacity_scale``
    (the synthetic loads are heavier per server than the sample's 60 RPM; 3x keeps
    the cheapest types contended without leaving servers unallocated).
    """
    base = load_system(LARGE)
    rng = np.random.default_rng(seed)
    classes = sorted(base.classes)
    models = sorted({m for cls in base.classes.values() for m in cls.targets})
    servers = []
    for i in range(num_servers):
        cls = classes[rng.integers(len(classes))]
        models_of_cls = sorted(base.classes[cls].targets)
        model = models_of_cls[rng.integers(len(models_of_cls))] if models_of_cls else models[0]
        load = Load(arrival_rpm=float(rng.uniform(10, 600)),
                    avg_in_tokens=int(rng.integers(128, 2049)),
                    avg_out_tokens=int(rng.integers(128, 2049)))
        servers.append(Server(name=f"{cls}-{model}-{i}", class_name=cls, model=model,
                              max_queue_size=64, current=Allocation(load=load)))
    factor = capacity_scale * max(num_servers / len(base.servers), 1.0)
    capacity = {t: int(c * factor) for t, c in base.capacity.items()}
    return replace(base, servers=tuple(servers), capacity=capacity)


CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "optimizer-cases"
CASE_CATALOG = CASES / "case-001"
"""Accelerators (21), models (9 × 21 perf entries), classes (4) and capacity of the
upstream-generated reference cases."""
_IN_TOKENS = (64, 128, 256, 512, 1024, 2048, 4096)
_OUT_TOKENS = (16, 64, 128, 256, 512, 1024, 2048)
_QUEUES = ((0, 0.40), (16, 0.26), (64, 0.19), (256, 0.15))


def case_like_system(num_servers: int, seed: int = 42, *, capacity_scale: float = 1.0) -> System:
    """``num_servers`` servers drawn like the upstream reference cases (tests/data).

    Power-of-two token counts, maxQueueSize in {0, 16, 64, 256}, loads log-uniform in
    1–3,000 RPM, ~15% with a maxBatchSize override, ~10% with minNumReplicas, ~20% with a
    current allocation (a third of them keepAccelerator). Capacity is case-001's, scaled by
    ``num_servers``/19 (its server count) and by ``capacity_scale`` (< 1: capacity-starved).
    """
    base = load_system(CASE_CATALOG)
    rng = np.random.default_rng(seed)
    classes = sorted(base.classes)
    queues = np.array([q for q, _ in _QUEUES])
    queue_p = np.array([p for _, p in _QUEUES])
    by_model: dict[str, list[str]] = {}
    for model, acc in sorted(base.perf):
        by_model.setdefault(model, []).append(acc)
    servers = []
    for i in range(num_servers):
        cls = classes[rng.integers(len(classes))]
        models = sorted(base.classes[cls].targets)
        model = models[rng.integers(len(models))]
        load = Load(arrival_rpm=round(float(np.exp(rng.uniform(0.0, np.log(3000.0)))), 3),
                    avg_in_tokens=int(rng.choice(_IN_TOKENS)),
                    avg_out_tokens=int(rng.choice(_OUT_TOKENS)))
        current = Allocation(load=load)
        keep = False
        if rng.random() < 0.2:
            acc = by_model[model][rng.integers(len(by_model[model]))]
            n = int(rng.integers(1, 11))
            count = base.perf[(model, acc)].acc_count
            current = Allocation(accelerator=acc, num_replicas=n, max_batch=16,
                                 cost=base.accelerators[acc].cost_per_hr * count * n, load=load)
            keep = bool(rng.random() < 1 / 3)
        servers.append(Server(
            name=f"{cls}-{model}-{i}", class_name=cls, model=model, keep_accelerator=keep,
            max_queue_size=int(rng.choice(queues, p=queue_p)),
            max_batch_size=int(rng.choice((4, 8, 16, 32, 64))) if rng.random() < 0.15 else 0,
            min_num_replicas=int(rng.integers(1, 4)) if rng.random() < 0.1 else 0,
            current=current))
    factor = capacity_scale * num_servers / 19
    capacity = {t: int(c * factor) for t, c in base.capacity.items()}
    return replace(base, servers=tuple(servers), capacity=capacity)
