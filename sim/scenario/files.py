"""Scenario files: YAML in (with `--set` overrides), YAML out.

Loading rules (`inferno.io.yamlbind`): unknown keys are errors that name the key path and list
the allowed keys; every value is type-checked where it is read; the specs' own checks are
re-raised with the file and key path. Relative paths are resolved against the directory of the
scenario file, so a scenario runs the same from any working directory; `dump_scenario` writes
them relative to the file's directory, so a recorded run moves with its data.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from inferno.errors import ConfigError
from inferno.io import safe
from inferno.io.yamlbind import bind, describe, to_plain
from sim.scenario.schema import Scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = REPO_ROOT / "scenarios" / "quickstart.yaml"
"""The embedded default (`inferno sim run` without a scenario); present in a source checkout
or an editable install."""


def parse_scenario(data: Any, *, file: str = "", base_dir: Path | str = ".") -> Scenario:
    """Build a Scenario from the mapping a YAML file holds; relative paths against base_dir."""
    scenario = bind(Scenario, data, file=file, base_dir=base_dir, root="scenario")
    return dataclasses.replace(scenario, source=file)


def read_yaml(path: Path) -> Any:
    """The document of a YAML file, with read and syntax errors, bad encoding, deep nesting
    and alias bombs as ConfigError (`inferno.io.safe`)."""
    return safe.read_yaml(path)


def load_scenario(path: Path | str, sets: Sequence[str] = (), *,
                  overrides: Sequence[tuple[str, Any]] = ()) -> Scenario:
    """Read a scenario file and apply `--set key.path=value` texts, then (key path, value)
    `overrides` (a sweep's grid point), in order."""
    path = Path(path)
    data = read_yaml(path)
    for text in sets:
        data = apply_set(data, *parse_set(text))
    for key, value in overrides:
        data = apply_set(data, key, value)
    return parse_scenario(data, file=str(path), base_dir=path.parent)


def parse_set(text: str) -> tuple[str, Any]:
    """`key.path=value` → (key path, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    try:
        value = safe.parse_yaml(raw, f"--set {key}") if raw.strip() else None
    except ConfigError as exc:
        if "MAX_" in str(exc):
            raise
        raise ConfigError(f"--set {key}: value {raw!r:.60} is not valid YAML") from None
    return key, value


def apply_set(data: Any, key_path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `data` with `key_path` (dotted; list items by index or by `name`) set.

    Missing intermediate mappings are created; the scenario loader checks the result.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"--set {key_path}: the scenario is not a mapping")
    root: dict[str, Any] = copy.deepcopy(dict(data))
    parts = key_path.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {key_path}: empty key in the path")
    node: Any = root
    done: list[str] = []
    for i, part in enumerate(parts):
        is_last = i == len(parts) - 1
        where = ".".join([*done, part])
        if isinstance(node, list):
            index = _list_index(node, part, key_path, where)
            if is_last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if is_last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {key_path}: {'.'.join(done)} is {describe(node)}, "
                              "not a mapping or a list")
        done.append(part)
    return root


def _list_index(items: list[Any], part: str, key_path: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--set {key_path}: {where}: index out of range "
                              f"(the list has {len(items)} items)")
        return index
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("name") == part:
            return index
    names = [str(item.get("name")) for item in items if isinstance(item, Mapping)]
    raise ConfigError(f"--set {key_path}: {where}: no item named {part!r}; "
                      f"names: {', '.join(names) or 'none'}")


def scenario_to_dict(scenario: Scenario, *, relative_to: Path | str | None = None
                     ) -> dict[str, Any]:
    """Plain YAML-ready data that `parse_scenario` reads back to an equal Scenario.

    Paths are written relative to `relative_to` (the directory the YAML will live in) when
    given, so a recorded run can be moved together with its data.
    """
    plain: dict[str, Any] = to_plain(scenario, relative_to)
    return plain


def dump_scenario(scenario: Scenario, path: Path | str) -> None:
    """Write the scenario as YAML with paths relative to the file's directory."""
    path = Path(path)
    doc = scenario_to_dict(scenario, relative_to=path.parent)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

