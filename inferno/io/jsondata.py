"""Read the upstream optimizer JSON inputs into a `System`, checking everything first.

Input: a directory with the six files (accelerator-data, capacity-data, model-data,
serviceclass-data, server-data, optimizer-data ``.json``), or a directory holding only
``system-data.json``, or the path of a ``system-data.json`` file (docs/design/optimizer-model.md
§1.7). A directory with
any of the six files is read in six-file mode, so ``sample-data/small`` (which has both) is read
from its six files.

Upstream leniency is kept (§0.4): keys match case-insensitively at every level, unknown
keys are ignored, missing or ``null`` keys read as zero / false / "". Units are those of §0.3 and
are not converted: rates stay in RPM (``arrivalRate`` → ``Load.arrival_rpm``), times in ms
(``slo-itl`` → ``ModelTarget.slo_itl_ms``), ``slo-tps`` in output tokens/s, ``cost`` in cents
per hour per unit (``Accelerator.cost_per_hr``), ``memSize`` GB, ``memBW`` GB/s, power in W.
Inferno extensions: a model target's ``slo-ttft-percentile`` / ``slo-itl-percentile`` (the
percentile its TTFT / ITL target is on; absent or 0 = the mean, as upstream) and
``maxNumTokens`` in model-data.

Normalised, not errors (upstream semantics): ``class`` missing or "" → ``Free``; ``priority``
outside 1..100 (incl. missing) → 100; ``accCount`` <= 0 → 1; ``maxQueueSize`` absent → None
(Q = 10·N), present (0 too) → that value; empty ``saturationPolicy`` / ``perfModel`` /
``batchPolicy`` → None / vllm / search (inferno's defaults: upstream had chunked);
``multiplicity`` absent → 1; ``maxNumTokens`` (model-data, inferno extension) absent → 8192;
``milpTimeLimit`` (optimizer-data, inferno extension, seconds) absent → 60.

Errors. Every problem of every file is collected, then one `ConfigError` is raised whose message
is the first line and whose ``problems`` hold all lines, each ``file: field.path: what, got
value`` with upstream key spelling and list indexes. Checked:

* a missing or unreadable file, invalid JSON (line and column), a document, section or entry
  that is not an object, a list field that is not a list;
* wrong types: a string, bool, list or object where a number is expected (and the reverse), a
  non-integral number where an integer is expected, NaN/Infinity;
* names that are keys must be non-empty strings: accelerator ``name`` and ``type``, capacity
  ``type``, model ``name`` and ``acc``, class ``name``, target ``model``, server ``name`` and
  ``model``; duplicates are errors (accelerator, capacity type, (model, acc) pair, class, target
  model within a class, server);
* ranges. Must be >= 0: memSize, memBW, cost, power idle/full/midPower, capacity count,
  maxBatchSize, atTokens, perfParms alpha/beta/gamma (all zero is legal: "no parameters yet",
  the candidate is infeasible, §3.2) and inferno's optional perfParms frontend,
  frontendPerToken, stream, kneeTokens, betaHigh (shape 'piecewise' requires betaHigh),
  slo-itl/slo-ttft/slo-tps, minNumReplicas, maxQueueSize,
  slo-ttft-percentile/slo-itl-percentile (also < 100),
  and in currentAlloc numReplicas, maxBatch, cost, itlAverage, ttftAverage, and the load's
  arrivalRate, throughput, avgInTokens, avgOutTokens (§3.2 drops negative loads; we reject
  them). Must be >= 1: multiplicity, maxNumTokens, and avgOutTokens when arrivalRate > 0
  (upstream reads that as zero load, §3.5, silently dropping real traffic; a load with
  requests but no output tokens is a data error). midUtil must lie in [0, 1];
* sizes beyond the bounds of `inferno.io.safe` (each named in the message): MAX_COST,
  MAX_DURATION_MS (perfParms times), MAX_CAPACITY, MAX_CARDS (accCount, multiplicity),
  MAX_BATCH, MAX_QUEUE (maxQueueSize), MAX_REPLICAS, MAX_TOKENS (token counts, atTokens,
  maxNumTokens) and MAX_PENALTY_FACTOR (accelPenaltyFactor);
* references: a model-data ``acc`` naming no accelerator, a server ``class`` naming no service
  class (also when the default ``Free`` is missing), a server ``model`` with no model-data entry
  at all. They are reported against the file holding the reference; they are skipped when the
  referenced file itself could not be read;
* an unknown ``saturationPolicy`` / ``perfModel`` / ``batchPolicy`` (case-insensitive match),
  with the allowed values.

Deliberately not errors (they only make a candidate infeasible, §3.1–3.2, and the server shows
up as unallocated): a class without a target for a server's model, a target for a model
without model-data, ``currentAlloc.accelerator`` naming no accelerator (keepAccelerator then has
no candidate), a capacity type no accelerator uses, a perf entry with all-zero parameters.
The two that are most likely typos, a capacity type no accelerator has and a keepAccelerator
server whose current accelerator is unknown, are logged as warnings (one line
each, at most three, then a count).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from inferno.errors import ConfigError
from inferno.io import safe
from inferno.io.fields import Fields, Problems, describe, known, quote, read_json
from inferno.model import (
    DEFAULT_CLASS,
    DEFAULT_MAX_NUM_TOKENS,
    DEFAULT_PRIORITY,
    Accelerator,
    Allocation,
    BatchPolicy,
    Load,
    ModelPerf,
    ModelTarget,
    OptimizerSettings,
    PerfModel,
    PerfParms,
    Power,
    SaturationPolicy,
    Server,
    ServiceClass,
    SolverKind,
    StepShape,
    System,
)

ACCELERATOR_FILE = "accelerator-data.json"
CAPACITY_FILE = "capacity-data.json"
MODEL_FILE = "model-data.json"
SERVICECLASS_FILE = "serviceclass-data.json"
SERVER_FILE = "server-data.json"
OPTIMIZER_FILE = "optimizer-data.json"
_log = logging.getLogger(__name__)
_MAX_BATCH = (safe.MAX_BATCH, "MAX_BATCH")
_MAX_REPLICAS = (safe.MAX_REPLICAS, "MAX_REPLICAS")
_MAX_TOKENS = (safe.MAX_TOKENS, "MAX_TOKENS")
_MAX_COST = (safe.MAX_COST, "MAX_COST")
_MAX_MS = (safe.MAX_DURATION_MS, "MAX_DURATION_MS")
_MAX_CAPACITY = (safe.MAX_CAPACITY, "MAX_CAPACITY")
_MAX_CARDS = (safe.MAX_CARDS, "MAX_CARDS")
_MAX_QUEUE = (safe.MAX_QUEUE, "MAX_QUEUE")
_MAX_PENALTY = (safe.MAX_PENALTY_FACTOR, "MAX_PENALTY_FACTOR")

SYSTEM_FILE = "system-data.json"

DATA_FILES = (ACCELERATOR_FILE, CAPACITY_FILE, MODEL_FILE, SERVICECLASS_FILE, SERVER_FILE,
              OPTIMIZER_FILE)
"""The six files, in reading order (references point backwards: servers → classes, models)."""

SECTIONS = {
    ACCELERATOR_FILE: "acceleratorData", CAPACITY_FILE: "capacityData",
    MODEL_FILE: "modelData", SERVICECLASS_FILE: "serviceClassData",
    SERVER_FILE: "serverData", OPTIMIZER_FILE: "optimizerData",
}
"""Where each file's content sits inside ``system-data.json``'s ``system`` object."""

_MIN_PRIORITY, _MAX_PRIORITY = 1, 100

E = TypeVar("E", bound=StrEnum)


def load_system(path: str | Path, *, overrides: Mapping[str, Any] | None = None,
                require_servers: bool = False) -> System:
    """Read and check a system from a data directory or a ``system-data.json`` file.

    Parameters
    ----------
    path : str or Path
        Directory with the six data files, directory with ``system-data.json``, or that file.
    overrides : Mapping, optional
        `OptimizerSettings` field names → values applied over optimizer-data (see
        `apply_overrides`); None values are ignored.
    require_servers : bool
        A server list that is missing or empty is a problem (``inferno optimize`` has nothing
        to do then); otherwise it reads as no servers (upstream semantics).

    Raises
    ------
    ConfigError
        With every problem found (``problems``); the message is the first one.
    """
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # ENAMETOOLONG and the like: is_dir() passes them on
        raise ConfigError(f"{safe.shorten_path(path)}: cannot read: "
                          f"{exc.strerror or exc}") from None
    if is_dir:
        if not any((path / name).is_file() for name in DATA_FILES) and (
                path / SYSTEM_FILE).is_file():
            system = _load_system_file(path / SYSTEM_FILE, require_servers)
        else:
            system = _load_directory(path, require_servers=require_servers)
    elif is_file:
        system = _load_system_file(path, require_servers)
    else:
        raise ConfigError(f"{path}: no such file or directory")
    if overrides:
        system = dataclasses.replace(system, settings=apply_overrides(system.settings, overrides))
    return system


def apply_overrides(settings: OptimizerSettings, overrides: Mapping[str, Any]) -> OptimizerSettings:
    """Replace settings fields by name, e.g. ``{"perf_model": "classic", "solver": "milp"}``.

    Enum fields take members or their string values (case-insensitive); other fields take a
    value of the field's type. ``solver`` is a shorthand: ``unlimited`` sets unlimited,
    ``greedy``/``milp`` set milp_solver and leave unlimited alone, so a system with unlimited
    capacity stays unlimited (upstream precedence: unlimited wins over milpSolver). None
    values are skipped, so CLI flags that were not given can be passed through as they are.
    """
    names = [f.name for f in dataclasses.fields(OptimizerSettings)]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        where = f"overrides: {key}"
        if key == "solver":
            kind = _enum_value(SolverKind, value, where)
            changes["milp_solver"] = kind is SolverKind.MILP
            if kind is SolverKind.UNLIMITED:
                changes["unlimited"] = True
        elif key not in names:
            allowed = ", ".join(sorted([*names, "solver"]))
            raise ConfigError(f"overrides: unknown setting {key!r} (allowed: {allowed})")
        elif isinstance(current := getattr(settings, key), StrEnum):
            changes[key] = _enum_value(type(current), value, where)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: must be true or false, got {value!r}")
            changes[key] = value
        elif isinstance(value, bool) or not isinstance(value, type(current)):
            raise ConfigError(f"{where}: must be {type(current).__name__}, got {value!r}")
        else:
            changes[key] = value
    return dataclasses.replace(settings, **changes)


def _enum_value(enum: type[E], value: Any, where: str) -> E:
    for member in enum:
        if isinstance(value, str) and member.value.lower() == value.lower():
            return member
    allowed = ", ".join(m.value for m in enum)
    raise ConfigError(f"{where}: unknown value {value!r} (allowed: {allowed})")


# -- entry points per layout ----------------------------------------------------------------


def load_static_data(path: str | Path) -> System:
    """The static data of a control loop (``INFERNO_DATA_PATH``): no server-data.json needed.

    Servers come from the cluster, so server-data.json is read only if present.
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory")
    return _load_directory(path, optional=(SERVER_FILE,))


def load_capacity(path: str | Path) -> dict[str, int]:
    """Only capacity-data.json of a data directory (re-read every control cycle)."""
    problems = Problems()
    name = CAPACITY_FILE
    is_read, doc = read_json(Path(path) / name, problems)
    if is_read and not isinstance(doc, Mapping):
        problems.add(name, "", f"must be a JSON object, got {describe(doc)}")
    problems.raise_if_any()
    capacity = _capacity(Fields(doc, file=name, path="", problems=problems))
    problems.raise_if_any()
    return capacity


def _load_directory(directory: Path, optional: tuple[str, ...] = (), *,
                    require_servers: bool = False) -> System:
    problems = Problems()
    roots: dict[str, Fields | None] = {}
    for name in DATA_FILES:
        if name in optional and not (directory / name).exists():
            roots[name] = None
            continue
        is_read, doc = read_json(directory / name, problems)
        if not is_read:
            roots[name] = None
        elif not isinstance(doc, Mapping):
            problems.add(name, "", f"must be a JSON object, got {describe(doc)}")
            roots[name] = None
        else:
            roots[name] = Fields(doc, file=name, path="", problems=problems)
    return _build(roots, problems, require_servers)


def _load_system_file(path: Path, require_servers: bool = False) -> System:
    problems = Problems()
    is_read, doc = read_json(path, problems)
    if not is_read:
        problems.raise_if_any()
    root = Fields.root(doc, file=path.name, problems=problems)
    if not root.has("system"):
        root.problem("system", "missing (the whole system is under this key)")
    system = root.object("system")
    roots: dict[str, Fields | None] = {}
    for name, key in SECTIONS.items():
        # A section of the wrong type is reported once and not read, to avoid a cascade of
        # unknown-reference lines; an absent section reads as empty (Go semantics).
        is_object = system.raw(key) is None or isinstance(system.raw(key), Mapping)
        roots[name] = system.object(key) if is_object else None
        if not is_object:
            system.problem(key, f"must be an object, got {describe(system.raw(key))}")
    return _build(roots, problems, require_servers)


def _build(roots: Mapping[str, Fields | None], problems: Problems,
           require_servers: bool = False) -> System:
    """Parse the sections in `DATA_FILES` order; a None root is a file that could not be read."""
    empty: dict[str, Any] = {}
    acc_root, cap_root = roots[ACCELERATOR_FILE], roots[CAPACITY_FILE]
    model_root, class_root = roots[MODEL_FILE], roots[SERVICECLASS_FILE]
    server_root, opt_root = roots[SERVER_FILE], roots[OPTIMIZER_FILE]

    accelerators = _accelerators(acc_root) if acc_root else None
    capacity = _capacity(cap_root) if cap_root else empty
    perf = _models(model_root, accelerators) if model_root else None
    classes = _classes(class_root) if class_root else None
    model_names = None if perf is None else {model for model, _ in perf}
    servers = _servers(server_root, classes, model_names) if server_root else ()
    if require_servers and server_root is not None and not server_root.raw("servers"):
        server_root.problem("servers", "missing or empty: there are no servers to optimize")
    settings = _settings(opt_root) if opt_root else OptimizerSettings()
    problems.raise_if_any()
    system = System(accelerators=accelerators or {}, perf=perf or {}, classes=classes or {},
                    servers=servers, settings=settings, capacity=capacity)
    if accelerators is not None:
        _warn_likely_typos(system)
    return system


_MAX_WARNINGS = 3
"""Warning lines logged for one data set; the rest are counted (a file of 10⁴ typos must not
bury the result)."""


def _warn_likely_typos(system: System) -> None:
    """Log references that are legal but most likely typos (see the module notes)."""
    types = sorted({a.type for a in system.accelerators.values()})
    lines = [f"{CAPACITY_FILE}: capacity for type {quote(type_)}, which no accelerator has "
             f"{known(types)}: it is unused" for type_ in sorted(set(system.capacity) - set(types))]
    for server in system.servers:
        acc = server.current.accelerator
        if server.keep_accelerator and acc and acc not in system.accelerators:
            lines.append(f"{SERVER_FILE}: server {quote(server.name)} keeps accelerator "
                         f"{quote(acc)}, which is not in {ACCELERATOR_FILE}: it cannot be "
                         "allocated")
    for line in lines[:_MAX_WARNINGS]:
        _log.warning("%s", line)
    if len(lines) > _MAX_WARNINGS:
        _log.warning("... and %d more such warnings", len(lines) - _MAX_WARNINGS)


# -- one reader per file ---------------------------------------------------------------------


def _accelerators(root: Fields) -> dict[str, Accelerator]:
    out: dict[str, Accelerator] = {}
    first: dict[str, str] = {}
    for a in root.objects("accelerators"):
        name = a.string("name", required=True)
        power = a.object("power")
        mid_util = power.number("midUtil", minimum=0.0)
        if mid_util > 1.0:
            power.problem("midUtil", f"must be <= 1, got {describe(power.raw('midUtil'))}")
        acc = Accelerator(
            name=name,
            type=a.string("type", required=True),
            multiplicity=a.integer("multiplicity", default=1, minimum=1, maximum=_MAX_CARDS),
            mem_gb=a.number("memSize", minimum=0.0),
            mem_bw_gbps=a.number("memBW", minimum=0.0),
            cost_per_hr=a.number("cost", minimum=0.0, maximum=_MAX_COST),
            power=Power(idle_w=power.number("idle", minimum=0.0),
                        full_w=power.number("full", minimum=0.0),
                        mid_w=power.number("midPower", minimum=0.0),
                        mid_util=min(mid_util, 1.0)),
        )
        if name and _unique(a, "name", name, "accelerator", first):
            out[name] = acc
    return out


def _capacity(root: Fields) -> dict[str, int]:
    out: dict[str, int] = {}
    first: dict[str, str] = {}
    for c in root.objects("count"):
        type_ = c.string("type", required=True)
        count = c.integer("count", minimum=0, maximum=_MAX_CAPACITY)
        if type_ and _unique(c, "type", type_, "accelerator type", first):
            out[type_] = count
    return out


def _models(root: Fields, accelerators: Mapping[str, Accelerator] | None,
            ) -> dict[tuple[str, str], ModelPerf]:
    out: dict[tuple[str, str], ModelPerf] = {}
    first: dict[tuple[str, str], str] = {}
    for m in root.objects("models"):
        name = m.string("name", required=True)
        acc = m.string("acc", required=True)
        if acc and accelerators is not None and acc not in accelerators:
            m.problem("acc", f"unknown accelerator {quote(acc)} {known(accelerators)}")
        parms = m.object("perfParms")
        acc_count = m.integer("accCount", maximum=_MAX_CARDS)
        entry = ModelPerf(
            model=name,
            accelerator=acc,
            acc_count=acc_count if acc_count > 0 else 1,
            max_batch_size=m.integer("maxBatchSize", minimum=0, maximum=_MAX_BATCH),
            at_tokens=m.integer("atTokens", minimum=0, maximum=_MAX_TOKENS),
            perf=_perf_parms(parms),
            max_num_tokens=m.integer("maxNumTokens", default=DEFAULT_MAX_NUM_TOKENS, minimum=1,
                                     maximum=_MAX_TOKENS),
        )
        if not (name and acc):
            continue
        key = (name, acc)
        if key in first:
            m.problem(None, f"duplicate entry for model {quote(name)} on accelerator {quote(acc)} "
                            f"(first at {first[key]})")
            continue
        first[key] = m.path
        out[key] = entry
    return out


def _perf_parms(parms: Fields) -> PerfParms:
    """perfParms: upstream's alpha/beta/gamma plus inferno's optional front-end, stream and
    step-shape terms (absent: 0 and the linear shape, upstream's meaning)."""
    shape = parms.choice("shape", StepShape, StepShape.LINEAR)
    knee = parms.number("kneeTokens", minimum=0.0)
    beta_high = parms.number("betaHigh", minimum=0.0, maximum=_MAX_MS)
    if shape is StepShape.PIECEWISE and not parms.has("betaHigh"):
        parms.problem("betaHigh", "is required with shape 'piecewise'")
    def ms(key: str) -> float:
        return parms.number(key, minimum=0.0, maximum=_MAX_MS)

    return PerfParms(alpha_ms=ms("alpha"), beta_ms=ms("beta"), gamma_ms=ms("gamma"),
                     frontend_ms=ms("frontend"), frontend_per_token_ms=ms("frontendPerToken"),
                     stream_ms=ms("stream"),
                     shape=shape, knee_tokens=knee, beta_high_ms=beta_high)


def _classes(root: Fields) -> dict[str, ServiceClass]:
    out: dict[str, ServiceClass] = {}
    first: dict[str, str] = {}
    for c in root.objects("serviceClasses"):
        name = c.string("name", required=True)
        priority = c.integer("priority")
        if not _MIN_PRIORITY <= priority <= _MAX_PRIORITY:
            priority = DEFAULT_PRIORITY
        targets: dict[str, ModelTarget] = {}
        first_target: dict[str, str] = {}
        for t in c.objects("modelTargets"):
            model = t.string("model", required=True)
            target = ModelTarget(model=model,
                                 slo_itl_ms=t.number("slo-itl", minimum=0.0),
                                 slo_ttft_ms=t.number("slo-ttft", minimum=0.0),
                                 slo_tps=t.number("slo-tps", minimum=0.0),
                                 slo_ttft_percentile=_percentile(t, "slo-ttft-percentile"),
                                 slo_itl_percentile=_percentile(t, "slo-itl-percentile"))
            if model and _unique(t, "model", model, "target for model", first_target):
                targets[model] = target
        if name and _unique(c, "name", name, "service class", first):
            out[name] = ServiceClass(name=name, priority=priority, targets=targets)
    return out


def _percentile(f: Fields, key: str) -> float:
    """A target's percentile: absent or 0 is the mean; otherwise 0 < p < 100."""
    value = f.number(key, minimum=0.0)
    if value >= 100.0:
        f.problem(key, f"must be 0 (the mean) or below 100, got {describe(f.raw(key))}")
        return 0.0
    return value


def _servers(root: Fields, classes: Mapping[str, ServiceClass] | None,
             model_names: set[str] | None) -> tuple[Server, ...]:
    out: list[Server] = []
    first: dict[str, str] = {}
    for s in root.objects("servers"):
        name = s.string("name", required=True)
        given_class = s.string("class")
        class_name = given_class or DEFAULT_CLASS
        is_str = isinstance(s.raw("class"), str | None)
        if classes is not None and is_str and class_name not in classes:
            what = (f"unknown service class {quote(class_name)}" if given_class else
                    f"no class given and the default class '{DEFAULT_CLASS}' is not defined")
            s.problem("class", f"{what} {known(classes)}")
        model = s.string("model", required=True)
        if model and model_names is not None and model not in model_names:
            s.problem("model", f"unknown model {quote(model)}: no {MODEL_FILE} entry "
                               f"{known(model_names)}")
        server = Server(
            name=name,
            class_name=class_name,
            model=model,
            keep_accelerator=s.boolean("keepAccelerator"),
            min_num_replicas=s.integer("minNumReplicas", minimum=0, maximum=_MAX_REPLICAS),
            max_batch_size=s.integer("maxBatchSize", minimum=0, maximum=_MAX_BATCH),
            max_queue_size=s.optional_integer("maxQueueSize", minimum=0, maximum=_MAX_QUEUE),
            current=read_allocation(s.object("currentAlloc"), is_input_load=True),
        )
        if name and _unique(s, "name", name, "server name", first):
            out.append(server)
    return tuple(out)


def _settings(root: Fields) -> OptimizerSettings:
    o = root.object("optimizer")
    return OptimizerSettings(
        unlimited=o.boolean("unlimited"),
        heterogeneous=o.boolean("heterogeneous"),
        milp_solver=o.boolean("milpSolver"),
        use_cplex=o.boolean("useCplex"),
        delayed_best_effort=o.boolean("delayedBestEffort"),
        saturation_policy=o.choice("saturationPolicy", SaturationPolicy, SaturationPolicy.NONE),
        perf_model=o.choice("perfModel", PerfModel, PerfModel.VLLM),
        batch_policy=o.choice("batchPolicy", BatchPolicy, BatchPolicy.SEARCH),
        accel_penalty_factor=o.number("accelPenaltyFactor", default=0.1, minimum=0.0,
                                      maximum=_MAX_PENALTY),
        milp_time_limit_s=o.number("milpTimeLimit", default=60.0, minimum=0.0),
    )


def read_allocation(f: Fields, *, is_input_load: bool = False) -> Allocation:
    """An upstream ``AllocationData`` object (server ``currentAlloc`` or a solution entry).

    With ``is_input_load`` a positive arrivalRate requires avgOutTokens >= 1 (see module doc).
    """
    accelerator = f.string("accelerator")
    num_replicas = f.integer("numReplicas", minimum=0, maximum=_MAX_REPLICAS)
    max_batch = f.integer("maxBatch", minimum=0, maximum=_MAX_BATCH)
    cost = f.number("cost", minimum=0.0, maximum=_MAX_COST)
    itl_ms = f.number("itlAverage", minimum=0.0)
    ttft_ms = f.number("ttftAverage", minimum=0.0)
    load = f.object("load")
    arrival_rpm = load.number("arrivalRate", minimum=0.0)
    throughput_rpm = load.number("throughput", minimum=0.0)
    in_tokens = load.integer("avgInTokens", minimum=0, maximum=_MAX_TOKENS)
    out_tokens = load.integer("avgOutTokens", minimum=0, maximum=_MAX_TOKENS)
    if is_input_load and arrival_rpm > 0 and out_tokens == 0:
        if load.has("avgOutTokens"):
            if load.raw("avgOutTokens") == 0:  # a negative value was reported already
                load.problem("avgOutTokens", "must be >= 1, got 0")
        elif load.has("arrivalRate"):
            load.problem("avgOutTokens", "missing (must be >= 1 when arrivalRate > 0)")
    saturated = f.boolean("saturated")  # inferno output: latencies are null then
    return Allocation(
        accelerator=accelerator, num_replicas=num_replicas, max_batch=max_batch, cost=cost,
        itl_ms=None if saturated else itl_ms, ttft_ms=None if saturated else ttft_ms,
        saturated=saturated,
        load=Load(arrival_rpm=arrival_rpm, throughput_rpm=throughput_rpm,
                  avg_in_tokens=in_tokens, avg_out_tokens=out_tokens),
    )


def _unique(f: Fields, key: str, name: Any, what: str, first: dict[Any, str]) -> bool:
    """Record ``name`` as seen at ``f``; a repeat is a problem and returns False."""
    if name in first:
        f.problem(key, f"duplicate {what} {quote(name)} (first at {first[name]})")
        return False
    first[name] = f.path
    return True
