"""Output files: reserved (and so checked) before any work starts, replaced atomically at the end.

A command that writes a result first calls `OutputFile.reserve`: it creates the temporary file
next to the target, so a missing or unwritable directory, a target that is a directory, or
any other reason the file cannot be written is a one-line `ConfigError` before a solve or a
run is spent on it. `OutputFile.write_json` then fills the temporary file and moves it over
the target with `os.replace`; readers never see a half-written file, and on any failure the
target is left as it was and the temporary file is removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from inferno.errors import ConfigError, InfernoError

_NEW_FILE_MODE = 0o644


def _problem(path: Path, exc: OSError | None = None) -> str:
    """Why ``path`` cannot be written, in words (the first reason found)."""
    parent = path.parent
    if path.is_dir():
        return "it is a directory"
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    reason = exc.strerror if exc is not None and exc.strerror else str(exc)
    return reason[:1].lower() + reason[1:]


class OutputFile:
    """One output file, reserved by `reserve` and written once by `write_json`.

    Use as a context manager: leaving the block without a write removes the reservation.
    """

    __slots__ = ("_fd", "_tmp", "mode", "path")

    def __init__(self, path: Path, fd: int, tmp: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        """Permission bits the written file gets: the existing file's, else 0o644."""
        self._fd: int | None = fd
        self._tmp: str | None = tmp

    @classmethod
    def reserve(cls, path: str | Path) -> OutputFile:
        """Check that ``path`` can be written, by creating its temporary file now.

        Raises
        ------
        ConfigError
            ``"<path>: cannot write the output: <reason>"``; nothing is created.
        """
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: cannot write the output: {_problem(path)}")
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = _NEW_FILE_MODE
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the output: {_problem(path, exc)}") from exc
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{path}: cannot write the output: the file is read-only")
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the output: {_problem(path, exc)}") from exc
        return cls(path, fd, tmp, mode)

    def write_json(self, obj: Any) -> None:
        """Serialise ``obj`` as indented JSON into the reserved file (NaN and infinity refused:
        not JSON) and move it over the target. A serialisation error is raised as is (a bug,
        not bad input) and leaves the target untouched; a failed write or rename raises
        `InfernoError` naming the file."""
        if self._fd is None or self._tmp is None:
            raise InfernoError(f"{self.path}: output already written or discarded")
        try:
            with os.fdopen(self._fd, "w", encoding="utf-8") as out:
                self._fd = None
                # streamed: a 5,000-server solution never exists as one string
                json.dump(obj, out, indent=2, allow_nan=False)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(self._tmp, self.mode)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as exc:
            raise InfernoError(f"{self.path}: cannot write the output: "
                               f"{_problem(self.path, exc)}") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the reservation (the target is untouched). Safe to call more than once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` so readers never see a half-written file.

    `OutputFile.reserve` then `OutputFile.write_json`: on any failure ``path`` is left as it
    was and no temporary file remains. An existing file's permission bits are kept; a new
    file gets 0o644.
    """
    with OutputFile.reserve(path) as out:
        out.write_json(obj)
