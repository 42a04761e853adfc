"""Upstream JSON data files <-> core dataclasses. Wire names never get past this package."""

from inferno.io.jsondata import (
    DATA_FILES,
    SYSTEM_FILE,
    apply_overrides,
    load_capacity,
    load_static_data,
    load_system,
)
from inferno.io.output import OutputFile, write_json_atomic
from inferno.io.solution import (
    allocation_to_json,
    read_solution,
    read_unallocated,
    solution_to_json,
)

__all__ = [
    "DATA_FILES", "SYSTEM_FILE", "OutputFile", "allocation_to_json", "apply_overrides",
    "load_capacity", "load_static_data", "load_system", "read_solution", "read_unallocated",
    "solution_to_json", "write_json_atomic",
]
