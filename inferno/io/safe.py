"""Reading user files safely: one home for decoding, nesting and size limits.

Every file a command reads (data JSON, scenario and sweep YAML, benchmark CSV and JSON, traces,
policy settings) goes through `read_text`, `parse_json` or `parse_yaml`, so each failure is one
`ConfigError` naming the file: not found, a directory, unreadable, not UTF-8, too large, not
valid JSON/YAML, nested deeper than `MAX_DEPTH` or, after YAML aliases are expanded, larger than
`MAX_NODES` values (a "billion laughs" file is a few lines that expand to 10⁹ values). A leading
UTF-8 byte-order mark is accepted (editors on Windows write one).

`check_limit` is the one home for the size bounds that keep a run from running away: the
limit is named in the message, and a `--force` flag lifts it where a user may really want it.
`check_output_dir` and `check_output_file` check an output path before the work starts.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inferno.errors import ConfigError
from inferno.model.server import MAX_QUEUE_TO_BATCH_RATIO

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings accepted in a JSON or YAML document (our files use 6)."""

MAX_NODES = 2_000_000
"""Most values in one JSON or YAML document, counted after YAML aliases are expanded."""

MAX_FILE_BYTES = 512 * 2**20
"""Largest file read as text (a trace of several million requests is well under)."""

# Bounds on sizes that would make a run run away (memory or time grow with them). Values far
# beyond any real fleet are errors; the simulated-work bounds yield to `--force`.
MAX_REPLICAS = 10_000
"""Replicas of one server (the largest fleets run a few hundred per model)."""
MAX_BATCH = 65_536
"""Max batch (vLLM max_num_seqs; defaults are 256 to 1024)."""
MAX_QUEUE = MAX_QUEUE_TO_BATCH_RATIO * MAX_BATCH
"""Queue slots beyond the batch of one replica (a server without its own has 10 x the batch)."""
MAX_CARDS = 4_096
"""Accelerator units of one replica (model-data ``accCount``) and cards of one unit
(``multiplicity``): the largest multi-node replicas use a few hundred GPUs, and cards x
replicas stays far inside a 64-bit integer."""
MAX_COST = 1e12
"""Any cost figure (an accelerator's cost per hour, a current allocation's cost): far beyond a
fleet's, and small enough that cost x cards x replicas stays finite."""
MAX_PENALTY_FACTOR = 1e6
"""optimizer-data ``accelPenaltyFactor`` (upstream 0.1): at a million times the cost a move
never pays already; beyond, factor x cost overflowed or left the MILP solver's range."""
MAX_DURATION_MS = 1e9
"""Any iteration-model time in milliseconds (α, β, γ, front-end, stream: 11 days a token),
so the service times built from them stay finite."""
MAX_CAPACITY = 1_000_000_000
"""Units of one accelerator type in the inventory."""
MAX_RATE_RPM = 1_000_000
"""Arrival rate of one server, requests per minute (about 17,000 requests a second)."""
MAX_TOKENS = 10_000_000
"""Tokens of one request (the longest context windows are about 10⁶)."""
MAX_CONCURRENCY = 1_000_000
"""Closed-loop users of one benchmark point."""
MAX_SEED = 2**63 - 1
"""Largest seed (64-bit signed, as every random stream and file format takes it)."""
MAX_SIM_REQUESTS = 20_000_000
"""Requests of one simulated run (300x the largest shipped scenario; a fleet-hour of 1,000
replicas at 2,500 req/s is 9 million). Finished requests are folded into sketches, so memory
does not grow with them; the bound is on time (≈ 20 µs of CPU per request: ~7 minutes).
`--force` lifts it."""
MAX_SIM_REQUESTS_KEPT = 2_000_000
"""Requests of one simulated run that keeps every request in memory for exact statistics
(`calibrate`'s replays; about 2 GB); `--force` lifts it."""
MAX_SIM_DURATION_S = 90 * 86_400.0
"""Simulated seconds of one run (90 days); `--force` lifts it."""
MAX_SIM_STEPS = 1_000_000
"""Control cycles or emulator steps of one run (duration / period); `--force` lifts it."""
MAX_SWEEP_RUNS = 10_000
"""Runs of one sweep (grid points × policies × seeds); `--force` lifts it."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def read_text(path: str | Path, label: str | None = None) -> str:
    """The text of a UTF-8 file (a byte-order mark dropped); every failure a `ConfigError`
    ``"<label>: <reason>"`` (``label`` defaults to the path; a flag's name may lead it)."""
    path = Path(path)
    label = label or str(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{label}: is a directory, expected a file")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise ConfigError(f"{label}: not a regular file")
        with path.open("rb") as src:
            data = src.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{label}: cannot read: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{label}: larger than the limit of {MAX_FILE_BYTES:,} bytes "
                          "(MAX_FILE_BYTES)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def check_tree(doc: Any, label: str) -> Any:
    """``doc`` if it nests at most `MAX_DEPTH` deep and holds at most `MAX_NODES` values
    (shared YAML alias targets counted at every use); else a `ConfigError`."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"{label}: more than {MAX_NODES:,} values (MAX_NODES; YAML "
                              "aliases are counted at every use)")
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth >= MAX_DEPTH and children:
            raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels (MAX_DEPTH)")
        stack.extend((child, depth + 1) for child in children)
    return doc


def parse_json(text: str, label: str) -> Any:
    """A JSON document with bounded nesting and size; syntax errors name line and column."""
    try:
        try:
            doc = json.loads(text, object_pairs_hook=_unique_keys)
        except (json.JSONDecodeError, _DuplicateKey):
            raise
        except ValueError:  # an integer over Python's digit limit: read again, see `_long_int`
            doc = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_long_int)
    except _DuplicateKey as exc:
        raise ConfigError(f"{label}: duplicate key {exc.args[0]!r}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels (MAX_DEPTH)") from None
    return check_tree(doc, label)


def _long_int(text: str) -> int | float:
    """An integer literal; one longer than Python converts (``sys.get_int_max_str_digits``,
    4300 digits: the bound keeps conversion from taking quadratic time) reads as a float,
    i.e. infinity, which the readers refuse with the field's path like any other ``1e999``."""
    return int(text) if len(text) <= sys.get_int_max_str_digits() else float(text)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return doc


_YAML_EXPONENT_FLOAT = r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"
"""YAML 1.2 floats PyYAML (YAML 1.1) reads as strings: an exponent without a dot (``1e12``)."""

_yaml_loader: Any = None


def _loader() -> Any:
    """The safe YAML loader class, built on first use (and once): `inferno optimize` reads JSON
    only and starts without importing yaml."""
    global _yaml_loader
    if _yaml_loader is not None:
        return _yaml_loader
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """PyYAML's safe loader with nesting bounded while composing (its composer recurses),
        duplicate keys refused, YAML 1.2 exponent floats (``1e12``) read as numbers and
        integers too long to convert read as infinite."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH + 1:
                    mark = self.peek_event().start_mark
                    raise yaml.YAMLError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} "
                                         "levels (MAX_DEPTH)")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                    if key is not None and key != "<<" and key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            """An integer over Python's digit limit reads as infinity, as in `_long_int`."""
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                return float("inf") if not str(node.value).startswith("-") else float("-inf")

    BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
    BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                        re.compile(_YAML_EXPONENT_FLOAT), list("-+0123456789"))
    _yaml_loader = BoundedLoader
    return _yaml_loader


def parse_yaml(text: str, label: str) -> Any:
    """A YAML document (safe tags only) with bounded nesting and expanded size."""
    loader = _loader()
    import yaml  # already imported by `_loader`

    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{label}{at}: not valid YAML: {_one_line(problem)}") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels (MAX_DEPTH)") from None
    return check_tree(doc, label)


def read_json(path: str | Path, label: str | None = None) -> Any:
    """`read_text` then `parse_json`."""
    return parse_json(read_text(path, label), label or str(path))


def read_yaml(path: str | Path, label: str | None = None) -> Any:
    """`read_text` then `parse_yaml`."""
    return parse_yaml(read_text(path, label), label or str(path))


def safe_name(name: str, where: str) -> str:
    """``name`` if it can be a file or directory name under an output directory (letters,
    digits, ``.``, ``_``, ``-``; not ``.`` or ``..``); else a `ConfigError` naming ``where``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(f"{where}: must be a plain name of at most 128 letters, digits, "
                          f"'.', '_' or '-' (it names the output directory), got {name!r:.80}")
    return name


MAX_SHOWN = 60
"""Characters of a value, name or path shown in a message: one may be 10⁴ long, and an error
stays one readable line."""


def shorten(text: str) -> str:
    """``text`` cut to `MAX_SHOWN` characters (ending in "...")."""
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


MAX_PATH_SHOWN = 240
"""Characters of a path shown in a message: longer ones keep their start and their end (the
file name), so a 300-character name is still an error of one line."""


def shorten_path(path: str | Path) -> str:
    """``path`` as text, its middle elided beyond `MAX_PATH_SHOWN` characters."""
    text = str(path)
    if len(text) <= MAX_PATH_SHOWN:
        return text
    half = (MAX_PATH_SHOWN - 3) // 2
    return text[:half] + "..." + text[-half:]


def check_output_dir(path: str | Path, label: str) -> Path:
    """``path`` if it is, or can be created as, a writable directory; else a `ConfigError`
    ``"<label> <path>: <reason>"``. Nothing is created (the caller creates it after the
    work succeeds), so a bad path costs no run and leaves nothing behind."""
    path = Path(path)
    where = f"{label} {shorten_path(path)}" if label else shorten_path(path)
    probe = path
    try:
        while not probe.exists() and not probe.is_symlink():
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as exc:  # a name too long to look up: is_dir()/exists() pass it on
        raise ConfigError(f"{where}: cannot write the outputs: {exc.strerror or exc}") from None
    if not is_dir:
        what = "is a file" if probe == path else f"{probe} is not a directory"
        raise ConfigError(f"{where}: cannot write the outputs: {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write the outputs: {probe} is not writable")
    return path


def check_output_file(path: str | Path, label: str) -> Path:
    """``path`` if a file can be written there: not a directory, in an existing writable
    directory, and writable if it exists; else a `ConfigError` ``"<label> <path>: <reason>"``.
    Called before the work starts, so a bad path costs no run."""
    path = Path(path)
    where = f"{label} {shorten_path(path)}" if label else shorten_path(path)
    parent = path.parent
    try:
        is_dir, parent_is_dir, parent_exists = path.is_dir(), parent.is_dir(), parent.exists()
    except OSError as exc:  # as in `check_output_dir`
        raise ConfigError(f"{where}: cannot write: {exc.strerror or exc}") from None
    if is_dir:
        raise ConfigError(f"{where}: cannot write: is a directory, expected a file name")
    if not parent_is_dir:
        what = "does not exist" if not parent_exists else "is not a directory"
        raise ConfigError(f"{where}: cannot write: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists()
                                                     and not os.access(path, os.W_OK)):
        raise ConfigError(f"{where}: cannot write: permission denied")
    return path


def check_limit(value: float, limit: float, what: str, *, force: bool = False,
                hint: str = "--force lifts it") -> None:
    """A `ConfigError` when ``value`` exceeds ``limit`` (unless ``force``); ``what`` names
    the quantity and where it comes from, e.g. ``"scenario.yaml: simulated requests"``."""
    if force or value <= limit:
        return
    shown = f"{value:,.0f}" if abs(value) < 1e15 else f"{value:g}"
    tail = f"; {hint}" if hint else ""
    raise ConfigError(f"{what}: {shown} is over the limit of {limit:,.0f}{tail}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
