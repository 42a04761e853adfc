"""Frozen dataclasses of the core data model. Wire names never get past `inferno.io`."""

from inferno.model.accelerator import Accelerator, Power
from inferno.model.llm import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_NUM_TOKENS,
    ModelPerf,
    PerfParms,
    StepShape,
    effective_max_batch,
    frontend_delay_ms,
    iteration_time_ms,
)
from inferno.model.server import (
    MAX_QUEUE_TO_BATCH_RATIO,
    Allocation,
    Load,
    Server,
    effective_max_queue,
)
from inferno.model.service_class import (
    DEFAULT_CLASS,
    DEFAULT_PRIORITY,
    ModelTarget,
    ServiceClass,
    statistic_label,
)
from inferno.model.system import (
    BatchPolicy,
    OptimizerSettings,
    PerfModel,
    SaturationPolicy,
    SolverKind,
    System,
)

__all__ = [
    "DEFAULT_CLASS", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_NUM_TOKENS", "DEFAULT_PRIORITY",
    "MAX_QUEUE_TO_BATCH_RATIO",
    "Accelerator", "Allocation", "BatchPolicy", "Load", "ModelPerf", "ModelTarget",
    "OptimizerSettings", "PerfModel", "PerfParms", "Power", "SaturationPolicy", "Server",
    "ServiceClass", "SolverKind", "StepShape", "System", "effective_max_batch",
    "effective_max_queue", "frontend_delay_ms", "iteration_time_ms", "statistic_label",
]
