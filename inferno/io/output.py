"""Output files: reserved (and so checked) before any work starts, then written in one go.

A command that writes a result first calls `OutputFile.reserve`, so a missing or unwritable
directory, a target that is a directory or a socket, or any other reason the file cannot be
written is a one-line `ConfigError` before a solve or a run is spent on it. What the target is
decides how it is written:

- a regular file, or a new one: the reservation is a temporary file next to it;
  `OutputFile.write_json` fills it and moves it over the target with `os.replace`. Readers
  never see a half-written file; on any failure the target is left as it was and the
  temporary file is removed (also on SIGTERM and Ctrl-C: the CLI turns them into exits).
- a symbolic link: the same, for the file the link resolves to; the link stays. A dangling
  link is written to its target path when that directory exists.
- a character or block device or a FIFO (a terminal, a pipe): the reservation opens it for
  writing, as a shell redirection does (a FIFO waits for its reader), and the JSON is written
  straight into it; so is whatever a /proc magic link such as ``/dev/stdout`` leads to (its
  text is no path to replace). The JSON is serialised first, so a serialisation error writes
  nothing; a failed write (e.g. a full device) is a one-line `ConfigError`.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from inferno.errors import ConfigError, InfernoError
from inferno.io.safe import shorten_path

_NEW_FILE_MODE = 0o644


def _problem(path: Path, exc: OSError | None = None) -> str:
    """Why ``path`` cannot be written, in words (the first reason found)."""
    parent = path.parent
    try:
        if path.is_dir():
            return "it is a directory"
        if not parent.exists():
            return f"directory {parent} does not exist"
        if not parent.is_dir():
            return f"{parent} is not a directory"
    except OSError:  # a name too long to look up: the original error says so
        pass
    reason = exc.strerror if exc is not None and exc.strerror else str(exc)
    return reason[:1].lower() + reason[1:]


def _through_proc(path: Path) -> bool:
    """Whether the chain of symbolic links from ``path`` passes through /proc (such as
    ``/dev/stdout -> /proc/self/fd/1``), where links lead to open files, not to names."""
    hop = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if hop == "/proc" or hop.startswith("/proc/"):
            return True
        if not os.path.islink(hop):
            return False
        hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
    return False


def _cannot(path: Path, reason: str) -> str:
    return f"{shorten_path(path)}: cannot write the output: {reason}"


class OutputFile:
    """One output file, reserved by `reserve` and written once by `write_json`.

    Use as a context manager: leaving the block without a write removes the reservation.
    """

    __slots__ = ("_fd", "_target", "_tmp", "mode", "path")

    def __init__(self, path: Path, fd: int, tmp: str | None, mode: int,
                 target: Path | None = None) -> None:
        self.path = path
        self.mode = mode
        """Permission bits the written file gets: the existing file's, else 0o644."""
        self._fd: int | None = fd
        self._tmp: str | None = tmp
        """The temporary file; None when ``_fd`` is the target itself (written in place)."""
        self._target = target or path
        """What is replaced: ``path``, or the file a symbolic link ``path`` resolves to."""

    @classmethod
    def reserve(cls, path: str | Path) -> OutputFile:
        """Check that ``path`` can be written: create its temporary file now or, for what
        is written in place (a device, a FIFO), open it.

        Raises
        ------
        ConfigError
            ``"<path>: cannot write the output: <reason>"``; nothing is created.
        """
        path = Path(path)
        try:
            st = os.stat(path)  # through any symbolic links, as the kernel resolves them
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise ConfigError(_cannot(path, _problem(path, exc))) from exc
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ConfigError(_cannot(path, "it is a directory"))
        if st is not None and stat.S_ISSOCK(st.st_mode):
            raise ConfigError(_cannot(path, "it is a socket"))
        if st is not None and not stat.S_ISREG(st.st_mode):
            return cls._open_in_place(path, os.O_WRONLY)
        target = path
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            if st is not None and (_through_proc(path)
                                   or not os.path.samestat(st, os.stat(target))):
                # a /proc magic link (/dev/stdout redirected to a file): its text names no
                # file to replace; write where it leads, as a shell redirection does
                return cls._open_in_place(path, os.O_WRONLY | os.O_TRUNC)
        if st is not None and not os.access(target, os.W_OK):
            raise ConfigError(_cannot(path, "the file is read-only"))
        mode = _NEW_FILE_MODE if st is None else st.st_mode & 0o777
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".tmp")
        except OSError as exc:
            raise ConfigError(_cannot(path, _problem(target, exc))) from exc
        return cls(path, fd, tmp, mode, target)

    @classmethod
    def _open_in_place(cls, path: Path, flags: int) -> OutputFile:
        """Open what ``path`` leads to now, to write it in place: it cannot be replaced."""
        try:
            fd = os.open(path, flags | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(_cannot(path, _problem(path, exc))) from exc
        return cls(path, fd, None, _NEW_FILE_MODE)

    def write_json(self, obj: Any) -> None:
        """Serialise ``obj`` as indented JSON (NaN and infinity refused: not JSON) into the
        reservation and, for a file, move it over the target. A serialisation error is raised
        as is (a bug, not bad input) and leaves the target untouched; a failed write or rename
        raises `InfernoError` naming the file (`ConfigError` when written in place)."""
        def dump(out: TextIO) -> None:
            # streamed into a file: a 5,000-server solution never exists as one string
            json.dump(obj, out, indent=2, allow_nan=False)
            out.write("\n")

        self._write(dump, lambda: json.dumps(obj, indent=2, allow_nan=False) + "\n")

    def write_text(self, text: str) -> None:
        """`write_json` for text already made (a CSV, a table)."""
        self._write(lambda out: out.write(text), lambda: text)

    def _write(self, stream: Callable[[TextIO], object], whole: Callable[[], str]) -> None:
        """``stream`` writes the content into the temporary file; ``whole`` makes it in one
        piece for a target written in place (before the first byte: an error writes nothing).
        """
        fd, tmp = self._fd, self._tmp
        if fd is None:
            raise InfernoError(f"{self.path}: output already written or discarded")
        self._fd = None  # closed by the file object below, whatever happens
        try:
            if tmp is None:
                self._write_in_place(fd, whole)
            else:
                self._write_and_replace(fd, tmp, stream)
        finally:
            self.discard()

    def _write_and_replace(self, fd: int, tmp: str, stream: Callable[[TextIO], object]
                           ) -> None:
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                stream(out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, self.mode)
            os.replace(tmp, self._target)
            self._tmp = None
        except OSError as exc:
            raise InfernoError(_cannot(self.path, _problem(self._target, exc))) from exc

    def _write_in_place(self, fd: int, whole: Callable[[], str]) -> None:
        try:
            with os.fdopen(fd, "wb") as out:  # closes ``fd`` even when the last flush fails
                out.write(whole().encode())
        except OSError as exc:
            raise ConfigError(_cannot(self.path, _problem(self.path, exc))) from exc

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
    file gets 0o644. A symbolic link's target is replaced, not the link; a device or FIFO is
    written in place (module docstring).
    """
    with OutputFile.reserve(path) as out:
        out.write_json(obj)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`write_json_atomic` for text already made."""
    with OutputFile.reserve(path) as out:
        out.write_text(text)
