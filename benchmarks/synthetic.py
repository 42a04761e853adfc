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
