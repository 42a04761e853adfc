"""YAML documents <-> frozen settings dataclasses: the one binder of every YAML settings file.

`bind` builds a dataclass from the mapping a YAML file holds, field by field, following the
type hints: nested dataclasses, tuples, mappings, optionals, StrEnums (matched without case;
YAML 1.1 reads a bare off/on as a boolean, taken back as "off"/"on"), numbers, strings and
paths (relative ones resolved against the file's directory). Unknown keys are errors that name
the key path and list the allowed keys; a wrong type names the path and the value; the
dataclass's own checks (`ConfigError` from ``__post_init__``) are re-raised with the file and
the path. A field's YAML key is its name unless its metadata says ``{"yaml": key}``; fields
with ``{"internal": True}`` metadata are not YAML keys. A nested dataclass starts from its
parent's default (e.g. a policy's own stabilisation settings), so a partial section keeps the
other defaults.

`to_plain` is the inverse (plain YAML-ready data that `bind` reads back to an equal object).
Users: scenarios and sweeps (`sim.scenario`) and live mode's ``--policy-settings`` files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from inferno.errors import ConfigError
from inferno.io import safe

__all__ = ["bind", "bind_path", "choices", "describe", "file_prefix", "join_path", "load_settings",
           "to_plain", "wrap", "yaml_key"]

_S = TypeVar("_S")
_T = TypeVar("_T")


def yaml_key(key: str) -> dict[str, str]:
    """Field metadata giving the field the YAML key `key` (e.g. ``class`` for class_name)."""
    return {"yaml": key}


def choices(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Field metadata for a string field with fixed spellings: YAML values match them without
    case, like StrEnum members (``Uniform`` reads as ``uniform``)."""
    return {"choices": values}


def _canonical(f: dataclasses.Field[Any], value: Any) -> Any:
    """`value` in the spelling of the field's `choices`, when it matches one without case."""
    if isinstance(value, str):
        for spelling in f.metadata.get("choices", ()):
            if spelling.lower() == value.lower():
                return spelling
    return value


def file_prefix(file: str) -> str:
    """``"file: "`` for messages, or nothing when there is no file."""
    return f"{file}: " if file else ""


def join_path(where: str, key: str | int) -> str:
    """The key path `where` extended by a mapping key (cut by `safe.shorten`: a path names a
    key in a message, and a key may be 10⁴ long) or a list index."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    key = safe.shorten(key)
    return f"{where}.{key}" if where else key


def describe(value: Any) -> str:
    """A short account of a YAML value for messages: its repr, cut by `safe.shorten`."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 3 * safe.MAX_SHOWN:  # no slow repr
        return f"an integer of about {value.bit_length() * math.log10(2):,.0f} digits"
    return safe.shorten(repr(value))


def wrap(build: Callable[[], _T], file: str, where: str) -> _T:
    """`build()`, with a ConfigError re-raised prefixed by the file and the key path."""
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"{file_prefix(file)}{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Ctx:
    file: str
    base_dir: Path
    root: str


def _key_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("yaml", f.name))


def _public_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in fields(cls) if f.init and not f.metadata.get("internal")]


def bind(cls: type[_S], data: Any, *, file: str = "", base_dir: Path | str = ".",
         base: _S | None = None, root: str = "document") -> _S:
    """Dataclass `cls` from a YAML value; `base` supplies the defaults of missing keys, `root`
    names the whole document in messages (e.g. "scenario")."""
    ctx = _Ctx(file=file, base_dir=Path(base_dir).resolve(), root=root)
    built: _S = _build(cls, data, "", ctx, base)
    return built


def load_settings(path: Path | str, cls: type[_S]) -> _S:
    """Settings dataclass `cls` from a YAML file of its fields (the keys of a scenario's
    ``policy.<name>`` section): unknown keys, wrong types and bad values are ConfigErrors
    naming the file and the key path."""
    path = Path(path)
    data = safe.read_yaml(path)
    if data is None:
        data = {}
    return bind(cls, data, file=str(path), base_dir=path.parent, base=cls(),
                root="settings")


def _build(cls: type, data: Any, where: str, ctx: _Ctx, base: Any = None) -> Any:
    label = where or ctx.root
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file_prefix(ctx.file)}{label}: expected a mapping, got "
                          f"{describe(data)}")
    by_key = {_key_of(f): f for f in _public_fields(cls)}
    for key in data:
        if key not in by_key:
            raise ConfigError(f"{file_prefix(ctx.file)}{join_path(where, str(key))}: unknown "
                              f"key; allowed: {', '.join(sorted(by_key))}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, f in by_key.items():
        default = getattr(base, f.name) if base is not None else (
            f.default if f.default is not MISSING else MISSING)
        if key not in data:
            if base is not None:
                kwargs[f.name] = default
            elif f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{file_prefix(ctx.file)}{join_path(where, key)}: required")
            continue
        kwargs[f.name] = _canonical(f, _convert(hints[f.name], data[key],
                                                join_path(where, key), ctx, default))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{file_prefix(ctx.file)}{_located(label, str(exc))}") from None


def _located(label: str, message: str) -> str:
    """``label: message``, without the section's own name when a settings class's message
    starts with it ("startup.mean_s must ..." under twin.startup, "emulator: ..." under
    emulator)."""
    own = label.rsplit(".", 1)[-1]
    if message.startswith(own + "."):
        return label + message[len(own):]
    if message.startswith(own + ": "):
        message = message[len(own) + 2:]
    return f"{label}: {message}"


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _convert(tp: Any, value: Any, where: str, ctx: _Ctx, default: Any = MISSING) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{file_prefix(ctx.file)}{where}: expected {expected}, got "
                           f"{describe(value)}")

    if tp is Any:
        return value
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(get_args(tp)):
                return None
            raise fail("a value")
        return _convert(args[0], value, where, ctx,
                        default if default is not None else MISSING)
    origin = get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail("a list")
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:  # tuple[X, ...]: any length
            items = (items[0],) * len(value)
        elif len(value) != len(items):  # tuple[X, Y]: exactly that many
            raise fail(f"a list of {len(items)} items")
        return tuple(_convert(item, v, join_path(where, i), ctx)
                     for i, (item, v) in enumerate(zip(items, value, strict=True)))
    if origin in (Mapping, dict, typing.Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(val_tp, v, join_path(where, str(k)), ctx)
                for k, v in value.items()}
    if isinstance(tp, type) and is_dataclass(tp):
        base = default if is_dataclass(default) else None
        return _build(tp, value, where, ctx, base)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on (no/yes) as a boolean
            value = "on" if value else "off"
        if isinstance(value, str):
            for member in tp:
                if member.value.lower() == value.lower():
                    return member
        raise fail(f"one of {', '.join(m.value for m in tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        number = value if isinstance(value, int) and not isinstance(value, bool) else (
            int(value) if isinstance(value, float) and value.is_integer() else None)
        if number is None:
            raise fail("an integer")
        if not -2**63 <= number < 2**63:  # every count and seed is a 64-bit one
            raise fail("an integer of at most 64 bits")
        return number
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    if tp is Path:
        path = _path(value)
        if path is None:
            raise fail("a path")
        return path if path.is_absolute() else (ctx.base_dir / path).resolve()
    raise TypeError(f"YAML binder: unsupported field type {tp!r} at {where}")


def bind_path(value: Any, *, file: str = "", base_dir: Path | str = ".",
              where: str = "path") -> Path:
    """`value` as a path field at key path `where` of `file` (relative to `base_dir`), as
    `bind` reads a `Path` field."""
    ctx = _Ctx(file=file, base_dir=Path(base_dir).resolve(), root=where)
    path: Path = _convert(Path, value, where, ctx)
    return path


MAX_NAME_BYTES = 255
"""Longest file name (NAME_MAX of Linux, macOS and Windows file systems)."""


def _path(value: Any) -> Path | None:
    """`value` as a path (``~`` expanded), or None unless it is text the OS could open: not
    empty, no NUL, encodable, names of at most `MAX_NAME_BYTES`, ``~user`` of a real user."""
    if not isinstance(value, str) or not value or "\0" in value:
        return None
    try:
        path = Path(value).expanduser()
        names = [os.fsencode(part) for part in path.parts]
    except (RuntimeError, UnicodeError):  # ~nosuchuser; a lone surrogate
        return None
    return path if all(len(name) <= MAX_NAME_BYTES for name in names) else None


def to_plain(value: Any, relative_to: Path | str | None = None) -> Any:
    """Plain YAML-ready data of a bound dataclass (or any value inside one) that `bind` reads
    back to an equal object; paths relative to `relative_to` when given (movable with the
    file they are written to)."""
    base = Path(relative_to).resolve() if relative_to is not None else None
    return _plain(value, base)


def _plain(value: Any, base: Path | None) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {_key_of(f): _plain(getattr(value, f.name), base)
                for f in _public_fields(type(value))}
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        if base is not None and os.path.commonpath([value, base]) != base.anchor:
            return os.path.relpath(value, base)  # movable with its data
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, base) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v, base) for v in value]
    return value
