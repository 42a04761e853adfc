"""Typed, case-insensitive access to decoded JSON with field paths, collecting problems.

Upstream Go decodes JSON keys case-insensitively, ignores unknown keys and leaves missing or
``null`` keys at their zero value; `Fields` gives the same leniency on read. Type and range
violations are not raised at once: they are appended to a shared `Problems` list (one line
``file: path: what, got value``) and a fallback value is returned, so a whole file can be
checked and reported in one go. Wire names live here and in the readers only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from inferno.errors import ConfigError
from inferno.io import safe

E = TypeVar("E", bound=StrEnum)

_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Unicode's control characters (category Cc: C0, DEL, C1) and lone surrogates (JSON's
``"\\ud800"`` escape decodes to one: it cannot be printed or written as UTF-8, so a name holding
one crashed the output), refused in names; a regex because this runs on every string of a
data folder (8x faster than per-character checks)."""


def describe(value: Any) -> str:
    """Short rendering of a JSON value for a message: ``"60"``, ``true``, ``a list``."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return safe.shorten(json.dumps(value))


class Problems:
    """Problem lines found while reading, in the order found."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, file: str, path: str, what: str) -> None:
        self.lines.append(f"{file}: {path}: {what}" if path else f"{file}: {what}")

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        """Raise one ConfigError carrying every line; its message is the first line."""
        if self.lines:
            raise ConfigError(self.lines[0], tuple(self.lines))


def read_json(path: Path, problems: Problems) -> tuple[bool, Any]:
    """``(True, document)``, or ``(False, None)`` after recording why the file is unusable."""
    name = path.name
    if not path.exists() and not path.is_symlink():
        problems.add(name, "", f"file not found in {path.parent}")
        return False, None
    try:
        return True, safe.parse_json(safe.read_text(path, label=name), name)
    except ConfigError as exc:
        problems.lines.append(str(exc))
        return False, None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Fields:
    """One JSON object: keys matched case-insensitively, reads typed, problems recorded.

    ``path`` is the object's position in the file in upstream spelling (``servers[3].load``);
    each accessor takes the key in upstream spelling and uses it for both lookup and messages.
    """

    __slots__ = ("file", "path", "problems", "_data")

    def __init__(self, data: Mapping[str, Any], *, file: str, path: str,
                 problems: Problems) -> None:
        self.file = file
        self.path = path
        self.problems = problems
        # Later duplicates win, as in Go's decoder.
        self._data = {str(k).lower(): v for k, v in data.items()}

    @classmethod
    def root(cls, value: Any, *, file: str, problems: Problems, path: str = "") -> Fields:
        """Wrap a decoded document; a non-object is a problem and reads as empty."""
        if not isinstance(value, Mapping):
            kind = "an object" if path else "a JSON object"
            problems.add(file, path, f"must be {kind}, got {describe(value)}")
            value = {}
        return cls(value, file=file, path=path, problems=problems)

    def problem(self, key: str | None, what: str) -> None:
        self.problems.add(self.file, join(self.path, key) if key else self.path, what)

    def raw(self, key: str) -> Any:
        """The raw value under ``key`` (any case), or None when absent or null."""
        return self._data.get(key.lower())

    def has(self, key: str) -> bool:
        return self.raw(key) is not None

    def _wrong(self, key: str, kind: str, value: Any) -> None:
        self.problem(key, f"must be {kind}, got {describe(value)}")

    # -- scalars -------------------------------------------------------------------------

    def string(self, key: str, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, "missing (a non-empty string is required)")
            return ""
        if isinstance(value, str):
            if required and not value:
                self.problem(key, 'must be a non-empty string, got ""')
            if bad := _REFUSED.search(value):
                what = ("unpaired surrogates (not text)" if "\ud800" <= bad.group() <= "\udfff"
                        else "control characters")
                self.problem(key, f"must not contain {what}, got {describe(value)}")
                return ""
            return value
        self._wrong(key, "a string", value)
        return ""

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self._wrong(key, "true or false", value)
            return False
        return value

    def number(self, key: str, *, default: float = 0.0, minimum: float | None = None,
               maximum: tuple[float, str] | None = None) -> float:
        """A finite number (int or float in JSON), optionally ``>= minimum`` and ``<= maximum``
        (a bound and its name, e.g. ``(safe.MAX_COST, "MAX_COST")``)."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, "a number", value)
            return default
        if not math.isfinite(value):
            self._wrong(key, "a finite number", value)
            return default
        if minimum is not None and value < minimum:
            self.problem(key, f"must be >= {_fmt(minimum)}, got {describe(value)}")
            return default
        if maximum is not None and value > maximum[0]:
            self.problem(key, f"must be <= {maximum[0]:,.0f} ({maximum[1]}), "
                              f"got {describe(value)}")
            return default
        return float(value)

    def integer(self, key: str, *, default: int = 0, minimum: int | None = None,
                maximum: tuple[int, str] | None = None) -> int:
        """An integer (``2.0`` accepted, ``2.5`` not), optionally ``>= minimum`` and
        ``<= maximum`` (a bound and its name, e.g. ``(safe.MAX_BATCH, "MAX_BATCH")``)."""
        value = self.raw(key)
        return default if value is None else self._integer(key, value, default, minimum, maximum)

    def optional_integer(self, key: str, *, minimum: int | None = None,
                         maximum: tuple[int, str] | None = None) -> int | None:
        """Like `integer`, but absent or null stays None (presence matters, e.g. 0 vs none)."""
        value = self.raw(key)
        return None if value is None else self._integer(key, value, None, minimum, maximum)

    def _integer(self, key: str, value: Any, default: Any, minimum: int | None,
                 maximum: tuple[int, str] | None) -> Any:
        if maximum is not None and isinstance(value, int | float) and value > maximum[0]:
            self.problem(key, f"must be <= {maximum[0]:,} ({maximum[1]}), got {describe(value)}")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, "an integer", value)
            return default
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            self._wrong(key, "an integer", value)
            return default
        if minimum is not None and value < minimum:
            self.problem(key, f"must be >= {minimum}, got {describe(value)}")
            return default
        return int(value)

    def choice(self, key: str, enum: type[E], default: E) -> E:
        """An enum value matched case-insensitively; absent, null or "" gives ``default``."""
        value = self.raw(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            self._wrong(key, "a string", value)
            return default
        for member in enum:
            if member.value.lower() == value.lower():
                return member
        allowed = ", ".join(m.value for m in enum)
        self.problem(key, f"unknown value {quote(value)} (allowed: {allowed})")
        return default

    # -- containers ----------------------------------------------------------------------

    def object(self, key: str) -> Fields:
        """The nested object under ``key``; absent or null reads as an empty object."""
        value = self.raw(key)
        path = join(self.path, key)
        if value is None:
            value = {}
        elif not isinstance(value, Mapping):
            self._wrong(key, "an object", value)
            value = {}
        return Fields(value, file=self.file, path=path, problems=self.problems)

    def objects(self, key: str) -> Iterator[Fields]:
        """The objects of the list under ``key`` with indexed paths; bad items are skipped."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            self._wrong(key, "a list", value)
            return
        base = join(self.path, key)
        for i, item in enumerate(value):
            path = f"{base}[{i}]"
            if isinstance(item, Mapping):
                yield Fields(item, file=self.file, path=path, problems=self.problems)
            else:
                self.problems.add(self.file, path, f"must be an object, got {describe(item)}")


    def entries(self, key: str) -> Iterator[tuple[str, Fields]]:
        """The ``name -> object`` pairs of the map under ``key`` (solution ``allocations``)."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, Mapping):
            self._wrong(key, "an object", value)
            return
        base = join(self.path, key)
        for name, item in value.items():
            path = join(base, str(name))
            if isinstance(item, Mapping):
                yield str(name), Fields(item, file=self.file, path=path, problems=self.problems)
            else:
                self.problems.add(self.file, path, f"must be an object, got {describe(item)}")


def quote(name: str) -> str:
    """``'name'`` for a message, cut to `safe.MAX_SHOWN` characters: a name may be 10⁴ long, and
    an error stays one readable line."""
    return f"'{safe.shorten(name)}'"


_MAX_KNOWN = 12


def known(names: Iterable[str]) -> str:
    """``(known: a, b, c)`` for unknown-reference messages (at most `_MAX_KNOWN` names, then
    how many more), or ``(none defined)``."""
    listed = sorted(names)
    if not listed:
        return "(none defined)"
    more = f", ... {len(listed) - _MAX_KNOWN} more" if len(listed) > _MAX_KNOWN else ""
    return f"(known: {', '.join(safe.shorten(n) for n in listed[:_MAX_KNOWN])}{more})"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
