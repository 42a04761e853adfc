"""JSON Schema of a settings dataclass, from the type hints `inferno.io.yamlbind` binds by.

Editors with a YAML language server (VS Code, JetBrains, Neovim) complete keys, show each
field's doc and flag unknown keys from it: put ``# yaml-language-server: $schema=PATH`` on the
first line of a scenario file. The schema follows the binder, not the other way round: the
binder stays the one judge of a file (value checks, path resolution, `--set`); the schema
describes the keys, their types and fixed spellings. Fixed spellings match without case in the
binder, so the schema lists the canonical ones (for completion) and also admits any case.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

__all__ = ["json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(cls: type, *, title: str, over_defaults: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of YAML documents that `yamlbind.bind` reads into
    `cls`. ``over_defaults``: the document is bound over ``cls()`` (every key optional, like
    live's ``--policy-settings``); otherwise keys without a default are required (a
    scenario)."""
    schema = _object(cls, over_defaults)
    return {"$schema": DIALECT, "title": title, **schema}


def _public(cls: type) -> list[Field[Any]]:
    return [f for f in fields(cls) if f.init and not f.metadata.get("internal")]


def _has_base(f: Field[Any]) -> bool:
    """Whether the binder builds this field's section over a default object (then none of
    the section's keys is required)."""
    if f.default is not MISSING:
        return is_dataclass(f.default)
    return f.default_factory is not MISSING and is_dataclass(f.default_factory())


def _object(cls: type, over_defaults: bool) -> dict[str, Any]:
    hints = get_type_hints(cls)
    docs = _field_docs(cls)
    properties: dict[str, Any] = {}
    needed = []
    for f in _public(cls):
        key = str(f.metadata.get("yaml", f.name))
        prop = _type(hints[f.name], f, over_defaults or _has_base(f))
        if f.name in docs:
            prop = {"description": docs[f.name], **prop}
        properties[key] = prop
        if not over_defaults and f.default is MISSING and f.default_factory is MISSING:
            needed.append(key)
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the generated signature
        out = {"description": doc.split("\n\n", 1)[0].replace("\n", " "), **out}
    if needed:
        out["required"] = needed
    return out


def _any_case(spellings: tuple[str, ...]) -> dict[str, Any]:
    """Canonical spellings (editors offer them), or any case of one of them (the binder's
    rule)."""
    pattern = "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else
                               ("\\" + c if not c.isalnum() and c != "_" else c)
                               for c in s) for s in spellings)
    return {"anyOf": [{"enum": list(spellings)},
                      {"type": "string", "pattern": f"^({pattern})$"}]}


def _type(tp: Any, f: Field[Any] | None, over_defaults: bool) -> dict[str, Any]:
    if tp is Any:
        return {}
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = _type(args[0], f, over_defaults)
        if len(args) < len(get_args(tp)):
            return {"anyOf": [inner, {"type": "null"}]}
        return inner
    origin = get_origin(tp)
    if origin is tuple:
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return {"type": "array", "items": _type(items[0], None, False)}
        return {"type": "array", "prefixItems": [_type(i, None, False) for i in items],
                "minItems": len(items), "maxItems": len(items)}
    if origin in (Mapping, dict, typing.Mapping) or tp is dict:
        _, value = get_args(tp) or (str, Any)
        return {"type": "object", "additionalProperties": _type(value, None, False)}
    if isinstance(tp, type) and is_dataclass(tp):
        return _object(tp, over_defaults)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        schema = _any_case(tuple(m.value for m in tp))
        if {"on", "off"} & {m.value for m in tp}:  # YAML 1.1 reads a bare on/off as a bool
            schema["anyOf"].append({"type": "boolean"})
        return schema
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        spellings = f.metadata.get("choices") if f is not None else None
        return _any_case(tuple(spellings)) if spellings else {"type": "string"}
    if tp is Path:
        return {"type": "string", "minLength": 1}
    raise TypeError(f"JSON Schema: unsupported field type {tp!r}")


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under its annotation), first paragraph."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    docs = {}
    if isinstance(body, ast.ClassDef):
        items = body.body
        for node, after in zip(items, items[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                text = inspect.cleandoc(after.value.value).split("\n\n", 1)[0]
                docs[node.target.id] = text.replace("\n", " ")
    return docs
