"""Output files: checked up front (one-line errors, nothing created), written atomically."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
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


def test_fifo_is_written_in_place(tmp_path: Path) -> None:
    """A FIFO is opened and written, not replaced by a regular file; a document that fails
    to serialise sends nothing down it."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening for writing
    try:                                                 # does not wait
        with pytest.raises(ValueError, match="Out of range float values"):
            write_json_atomic(fifo, {"cost": float("nan")})
        write_json_atomic(fifo, {"a": [1, 2]})
        assert json.loads(os.read(reader, 1 << 16)) == {"a": [1, 2]}
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]


def test_char_device_is_written_in_place() -> None:
    """A character device (here a pseudo-terminal, which needs no privilege) is opened and
    written, not replaced by a regular file: what was written comes out of its other end."""
    import tty

    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # no newline translation
        name = os.ttyname(slave)
        write_json_atomic(name, {"a": [1, 2]})
        got = b""
        while not got.endswith(b"}\n"):
            got += os.read(master, 1 << 16)
        assert json.loads(got) == {"a": [1, 2]}
        assert stat.S_ISCHR(os.lstat(name).st_mode)
    finally:
        os.close(slave)
        os.close(master)


def test_failed_in_place_write_is_a_one_line_config_error(tmp_path: Path) -> None:
    """A write that fails where the target is written in place (a FIFO whose reader went
    away: EPIPE; a full device: ENOSPC) is one ConfigError line; the FIFO stays."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    out = OutputFile.reserve(fifo)
    os.close(reader)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(fifo))}: cannot write the "
                                          "output: broken pipe$"):
        out.write_json({"a": "x" * 100_000})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]


def test_symlink_target_replaced_and_link_kept(tmp_path: Path) -> None:
    """Writing through a symbolic link replaces the file it points to (keeping its mode);
    the link stays a link to it, and no temporary file remains in either directory."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "solution.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "out.json"
    link.symlink_to(Path("data") / "solution.json")
    write_json_atomic(link, {"new": 1})
    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("data", "solution.json")
    assert json.loads(target.read_text()) == {"new": 1}
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out.json"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["solution.json"]


def test_dangling_symlink_writes_its_target_or_names_the_missing_directory(
        tmp_path: Path) -> None:
    """A dangling link creates the file it names when that directory exists; otherwise the
    usual one-line error names the missing directory, and nothing is created."""
    link = tmp_path / "out.json"
    link.symlink_to("new.json")
    write_json_atomic(link, {"n": 2})
    assert link.is_symlink()
    assert json.loads((tmp_path / "new.json").read_text()) == {"n": 2}
    lost = tmp_path / "lost.json"
    lost.symlink_to(Path("missing") / "x.json")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(lost))}: cannot write the output: "
                                          "directory .*missing does not exist$"):
        OutputFile.reserve(lost)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lost.json", "new.json", "out.json"]


def test_socket_is_refused(tmp_path: Path) -> None:
    """A Unix socket cannot take a JSON document: one ConfigError line, the socket stays."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: cannot write the "
                                              "output: it is a socket$"):
            OutputFile.reserve(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_proc_magic_link_writes_the_open_file_in_place(tmp_path: Path) -> None:
    """A link into /proc/self/fd (what /dev/stdout is) leads to an open file, not a name:
    that file is written in place (same inode), as a shell redirection would."""
    path = tmp_path / "redirected.txt"
    path.write_text("x" * 10_000)
    fd = os.open(path, os.O_WRONLY)
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{fd}")
        inode = path.stat().st_ino
        write_json_atomic(link, {"a": 1})
        assert path.stat().st_ino == inode
        assert json.loads(path.read_text()) == {"a": 1}
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["redirected.txt", "stdout"]


def test_text_goes_through_the_same_writer(tmp_path: Path) -> None:
    """write_text_atomic (CSV tables, the tuner's state) writes like write_json_atomic:
    a symlink's target is replaced and the link kept, no temporary file is left."""
    from inferno.io.output import write_text_atomic

    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    write_text_atomic(link, "a,b\n1,2\n")
    assert link.is_symlink()
    assert target.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_tuner_state_creates_its_directory_and_keeps_infinite_bounds(tmp_path: Path) -> None:
    """The tuner's state writer creates a missing directory (its files live under a state
    directory) and keeps JSON's Infinity for unbounded parameters."""
    from inferno.tuner.store import write_json_atomic as write_state

    path = tmp_path / "state" / "tuner.json"
    write_state(path, {"max": [float("inf"), 1.0]})
    assert json.loads(path.read_text()) == {"max": [float("inf"), 1.0]}
