"""Output files: checked up front (one-line errors, nothing created), written atomically."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from inferno.errors import ConfigError, InfernoError
from inferno.io import OutputFile, write_json_atomic


@pytest.mark.parametrize(("where", "reason"), [
    (lambda d: d / "missing" / "out.json", "directory .*missing does not exist"),
    (lambda d: d, "it is a directory"),
    (lambda d: d / "file.txt" / "out.json", ".*file.txt is not a directory"),
    (lambda d: Path("/sys/inferno-out.json"), "permission denied"),
], ids=["missing-dir", "is-dir", "parent-is-file", "unwritable-dir"])
def test_reserve_rejects_unwritable_paths(tmp_path: Path, where: object, reason: str) -> None:
    """Each output-path problem is one ConfigError line naming the path; nothing is created."""
    (tmp_path / "file.txt").write_text("x")
    path = where(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: cannot write the output: "
                                          f"{reason}$"):
        OutputFile.reserve(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_reservation_discarded_without_a_write(tmp_path: Path) -> None:
    """Leaving the block without writing removes the temporary file; the target is untouched."""
    path = tmp_path / "out.json"
    path.write_text("old")
    with OutputFile.reserve(path) as out:
        assert len(list(tmp_path.iterdir())) == 2  # the target and its reservation
    assert out.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert path.read_text() == "old"


def test_atomic_write_leaves_target_on_failure(tmp_path: Path) -> None:
    """If serialisation fails the old file is untouched and no temporary file remains."""
    path = tmp_path / "out.json"
    path.write_text('{"old": true}\n')
    with pytest.raises(ValueError, match="Out of range float values"):
        write_json_atomic(path, {"cost": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, {"when": object()})
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    """A write replaces the whole file, keeps its permission bits, and leaves no temp file."""
    path = tmp_path / "out.json"
    path.write_text("x" * 1000)
    os.chmod(path, 0o640)
    write_json_atomic(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert path.read_text().endswith("\n")
    assert path.stat().st_mode & 0o777 == 0o640
    write_json_atomic(tmp_path / "new.json", {})
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "out.json"]


def test_atomic_write_failure_during_write_cleans_up(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the temp file exists (e.g. the rename) removes it; target unchanged."""
    path = tmp_path / "out.json"
    path.write_text("old")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(InfernoError, match="out.json: cannot write the output: disk full"):
        write_json_atomic(path, {"new": 1})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
