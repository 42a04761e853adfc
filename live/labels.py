"""The label contract of a managed Deployment, parsed into plain data.

A Deployment opts in with ``inferno.server.managed: "true"`` and describes itself with the
``inferno.server.*`` labels below (docs/design/control-loop.md §2.1). Labels are user input: a
malformed one
raises `ConfigError` naming the label and its value, and the caller skips that one server
(never the whole cycle).

Load labels are the fallback when Prometheus has no data. ``.load.numtokens`` is the seed's
(v0) average number of generated tokens per request; the newer ``.load.intokens`` /
``.load.outtokens`` are read as well, and ``.load.outtokens`` wins over ``.load.numtokens``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from inferno.errors import ConfigError
from inferno.model.service_class import DEFAULT_CLASS

PREFIX = "inferno.server."
MANAGED = PREFIX + "managed"
NAME = PREFIX + "name"
MODEL = PREFIX + "model"
CLASS = PREFIX + "class"
ACCELERATOR = PREFIX + "allocation.accelerator"
MAX_BATCH = PREFIX + "allocation.maxbatchsize"
MAX_QUEUE = PREFIX + "allocation.maxqueuesize"
LOAD_RPM = PREFIX + "load.rpm"
LOAD_NUM_TOKENS = PREFIX + "load.numtokens"
LOAD_IN_TOKENS = PREFIX + "load.intokens"
LOAD_OUT_TOKENS = PREFIX + "load.outtokens"

MANAGED_SELECTOR = f"{MANAGED}=true"
"""Label selector of every managed Deployment (the only discovery criterion)."""

# Kubernetes label values: at most 63 characters, alphanumeric at both ends, [-_.] inside.
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLabels:
    """What a managed Deployment's labels say about its server."""

    name: str
    model: str
    class_name: str = DEFAULT_CLASS
    accelerator: str = ""
    """Current accelerator type; empty when the seed did not set one."""
    max_batch: int = 0
    """In-force max batch size; 0 when the label is absent (no pin)."""
    max_queue_size: int | None = None
    """External queue size passed to the optimizer; None when the label is absent."""
    load_rpm: float | None = None
    load_in_tokens: float | None = None
    load_out_tokens: float | None = None


def is_valid_label_value(value: str) -> bool:
    """True when `value` can be stored as a Kubernetes label value."""
    return bool(_LABEL_VALUE.match(value))


def _required(labels: Mapping[str, str], key: str) -> str:
    value = labels.get(key, "").strip()
    if not value:
        raise ConfigError(f"label {key}: missing or empty")
    return value


def _number(labels: Mapping[str, str], key: str) -> float | None:
    raw = labels.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"label {key}: must be a finite number >= 0, got {raw!r}")
    return value


def _count(labels: Mapping[str, str], key: str) -> int | None:
    raw = labels.get(key)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"label {key}: must be an integer >= 0, got {raw!r}")
    return int(raw)


def parse_labels(labels: Mapping[str, str]) -> ServerLabels:
    """Read a managed Deployment's labels; raises ConfigError naming the first bad label."""
    num_tokens = _number(labels, LOAD_NUM_TOKENS)
    out_tokens = _number(labels, LOAD_OUT_TOKENS)
    return ServerLabels(
        name=_required(labels, NAME),
        model=_required(labels, MODEL),
        class_name=labels.get(CLASS, "").strip() or DEFAULT_CLASS,
        accelerator=labels.get(ACCELERATOR, "").strip(),
        max_batch=_count(labels, MAX_BATCH) or 0,
        max_queue_size=_count(labels, MAX_QUEUE),
        load_rpm=_number(labels, LOAD_RPM),
        load_in_tokens=_number(labels, LOAD_IN_TOKENS),
        load_out_tokens=out_tokens if out_tokens is not None else num_tokens,
    )
