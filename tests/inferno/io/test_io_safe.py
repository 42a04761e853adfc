"""The safe YAML reader: YAML 1.2 exponent floats, strings left alone, one loader class."""

from __future__ import annotations

import math

import pytest

from inferno.errors import ConfigError
from inferno.io import safe


def test_exponent_without_a_dot_is_a_float_as_in_yaml_1_2() -> None:
    doc = safe.parse_yaml("a: 1e12\nb: -3E4\nc: +2e-3\nd: 1_0e2\n", "x.yaml")
    assert doc == {"a": 1e12, "b": -3e4, "c": 2e-3, "d": 10e2}
    assert all(isinstance(v, float) for v in doc.values())


def test_integers_strings_and_special_floats_keep_their_types() -> None:
    doc = safe.parse_yaml("i: 12\nf: 1.5\ns: 1e\nq: '1e3'\nn: .nan\nv: 1.0e+3\n", "x.yaml")
    assert doc["i"] == 12
    assert isinstance(doc["i"], int)
    assert doc["f"] == 1.5
    assert doc["v"] == 1000.0
    assert doc["s"] == "1e"
    assert doc["q"] == "1e3"
    assert math.isnan(doc["n"])


def test_integers_too_long_to_convert_read_as_infinite() -> None:
    """Python refuses int() of more than 4300 digits (ValueError): such a YAML integer reads
    as ±inf, which every field check refuses with its path, as in JSON."""
    doc = safe.parse_yaml(f"a: {'9' * 5000}\nb: -{'1' * 5000}\nc: 0x1f\nd: 1_000\n", "x.yaml")
    assert doc == {"a": math.inf, "b": -math.inf, "c": 31, "d": 1000}


def test_the_loader_class_is_built_once() -> None:
    safe.parse_yaml("a: 1\n", "x.yaml")
    assert safe._loader() is safe._loader()


def test_the_loader_still_refuses_duplicate_keys() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        safe.parse_yaml("a: 1\na: 2\n", "x.yaml")


def test_output_file_checks(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    assert safe.check_output_file(tmp_path / "new.csv", "--csv") == tmp_path / "new.csv"
    assert safe.check_output_file(tmp_path / "f", "--csv") == tmp_path / "f"
    for bad, reason in ((tmp_path, "is a directory"), (tmp_path / "f" / "x", "not a directory"),
                        (tmp_path / "missing" / "x", "does not exist")):
        with pytest.raises(ConfigError, match=reason):
            safe.check_output_file(bad, "--csv")
