"""The generic YAML binder (inferno.io.yamlbind): types, defaults, messages and round trip.

Scenario-specific rules are tested in tests/sim/closedloop/test_closedloop_scenario.py; here the
binder is exercised on small dataclasses of its own, so its rules hold for any settings file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from inferno.control.settings import HpaSettings, InfernoSettings
from inferno.errors import ConfigError
from inferno.io.yamlbind import bind, load_settings, to_plain, yaml_key


class Mode(StrEnum):
    OFF = "off"
    FAST = "fast"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    size: int = 3
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ConfigError(f"size must be >= 0, got {self.size!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    name: str
    kind: str = field(default="a", metadata=yaml_key("class"))
    mode: Mode = Mode.OFF
    inner: Inner = Inner(size=7)
    items: tuple[Inner, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    path: Path | None = None
    note: str = field(default="", metadata={"internal": True})


def test_binds_nested_values_and_keeps_the_parents_defaults(tmp_path: Path) -> None:
    doc = {"name": "x", "class": "b", "mode": "FAST", "inner": {"ratio": 2},
           "items": [{"size": 1}], "limits": {"h100": 4}, "path": "data"}
    out = bind(Outer, doc, file="f.yaml", base_dir=tmp_path)
    assert out == Outer(name="x", kind="b", mode=Mode.FAST, inner=Inner(size=7, ratio=2.0),
                        items=(Inner(size=1),), limits={"h100": 4},
                        path=(tmp_path / "data").resolve())


def test_yaml_booleans_read_back_as_off_and_on() -> None:
    assert bind(Outer, {"name": "x", "mode": False}).mode is Mode.OFF


@pytest.mark.parametrize(("doc", "message"), [
    ({"name": "x", "size": 1}, r"f\.yaml: size: unknown key; allowed: class, inner, items, "
                               r"limits, mode, name, path$"),
    ({"name": "x", "note": "n"}, r"note: unknown key"),
    ({}, r"f\.yaml: name: required"),
    ({"name": 3}, r"name: expected a string, got 3"),
    ({"name": "x", "mode": "slow"}, r"mode: expected one of off, fast, got 'slow'"),
    ({"name": "x", "inner": {"size": 1.5}}, r"inner\.size: expected an integer, got 1\.5"),
    ({"name": "x", "items": [{"size": -1}]}, r"f\.yaml: items\[0\]: size must be >= 0, got -1"),
    ({"name": "x", "inner": []}, r"inner: expected a mapping, got a list"),
    ([], r"f\.yaml: doc: expected a mapping, got a list"),
])
def test_errors_name_the_file_and_the_key_path(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bind(Outer, doc, file="f.yaml", root="doc")


def test_to_plain_reads_back_to_an_equal_object(tmp_path: Path) -> None:
    out = Outer(name="x", kind="b", mode=Mode.FAST, items=(Inner(size=2),),
                limits={"a": 1}, path=tmp_path / "d" / "e")
    plain = to_plain(out, relative_to=tmp_path)
    assert (plain["class"], plain["path"]) == ("b", "d/e")
    assert "note" not in plain
    assert bind(Outer, plain, base_dir=tmp_path) == out


def test_load_settings_reads_a_policy_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "hpa.yaml"
    path.write_text("tolerance: 0.2\n", encoding="utf-8")
    assert load_settings(path, HpaSettings) == HpaSettings(tolerance=0.2)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_settings(empty, InfernoSettings) == InfernoSettings()
    path.write_text("tolerence: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"hpa\.yaml: tolerence: unknown key"):
        load_settings(path, HpaSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class Named:
    """A settings class that names itself in its messages, as the twin's and live's do."""

    low: int = 0
    high: int = 0

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ConfigError(f"named.low must be <= high, got {self.low}")
        if self.high > 9:
            raise ConfigError(f"named: high must be <= 9, got {self.high}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    named: Named = Named()


@pytest.mark.parametrize(("doc", "message"), [
    ({"named": {"low": 2}}, r"^f\.yaml: named\.low must be <= high, got 2$"),
    ({"named": {"high": 10}}, r"^f\.yaml: named: high must be <= 9, got 10$"),
])
def test_a_section_that_names_itself_is_not_named_twice(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bind(Holder, doc, file="f.yaml")
