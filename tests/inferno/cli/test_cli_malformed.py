"""A battery of malformed inputs to every command: each exits 2 with a short error.

Every case builds a small world in a temporary directory (a data set, a scenario, a sweep,
benchmark files, a recorded run), breaks one thing and runs the command in process. Each must:
exit 2; print no traceback; print at most 4 lines on stderr; name the file (and the field or
flag) at fault; leave the temporary directory exactly as it was (no output created or
half-written, nothing written outside it); and finish quickly (a run that would run away
fails by timeout, and an address-space limit turns a memory runaway into a failure instead of
a machine-wide out-of-memory kill).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from inferno.cli import cli, error_lines
from inferno.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
LARGE = ROOT / "sample-data" / "large"
SMALL = ROOT / "sample-data" / "small"
DATA_FILES = ("accelerator-data.json", "capacity-data.json", "model-data.json",
              "optimizer-data.json", "server-data.json", "serviceclass-data.json")

MAX_LINE = 600
"""Longest error line accepted: a value is cut in messages, so a line stays readable."""
NOT_UTF8 = b'{"a": "\xff\xfe caf\xe9"}\n'
GARBAGE = bytes(range(256)) * 4
DEEP_JSON = "[" * 10_000 + "]" * 10_000
DEEP_JSON_OBJ = '{"a":' * 10_000 + "1" + "}" * 10_000
DEEP_YAML_FLOW = "[" * 10_000 + "]" * 10_000
DEEP_YAML_BLOCK = "".join(" " * i + "a:\n" for i in range(3_000)) + " " * 3_000 + "a: 1\n"
BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
       for i in range(8)]
    + ["name: *i"]) + "\n"

SCENARIO = """\
name: tiny
seed: 1
duration_s: 120
data: data
controller: {period_s: 60}
policy: {name: inferno}
servers:
  - name: Premium-granite_13b
    class: Premium
    model: granite_13b
    accelerator: H100
    replicas: 1
    load: {rate_rpm: 30, in_tokens: 128, out_tokens: 64}
"""

SWEEP = """\
name: tiny-sweep
scenario: scenario.yaml
policies: [inferno]
seeds: 1
grid:
  twin.startup.mean_s: [15]
"""

BENCH_CSV = """\
concurrency,in_tokens,out_tokens,ttft_ms,itl_ms,throughput_rps
1,128,64,40.0,8.0,1.9
4,128,64,60.0,9.0,7.0
"""


def _set(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    """One malformed input: ``build`` breaks the world and returns the argv; the error must
    contain every string of ``names`` (the file and the field or flag at fault)."""

    id: str
    build: Callable[[Path], list[str]]
    names: tuple[str, ...]
    codes: tuple[int, ...] = (2,)
    """Allowed exit codes: absurd but well-formed values may also be solved (exit 0)."""


def _world(tmp: Path) -> None:
    shutil.copytree(LARGE, tmp / "data")
    shutil.copytree(SMALL, tmp / "small")
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "sweep.yaml").write_text(SWEEP)
    (tmp / "bench.csv").write_text(BENCH_CSV)
    (tmp / "afile.txt").write_text("a regular file\n")
    (tmp / "cwd").mkdir()


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# ----------------------------------------------------------------------------- the battery
CASES: list[Case] = []


def case(id: str, *names: str, codes: tuple[int, ...] = (2,),
         ) -> Callable[[Callable[[Path], list[str]]], None]:
    def add(build: Callable[[Path], list[str]]) -> None:
        CASES.append(Case(id, build, names, codes))
    return add


def _optimize(tmp: Path, *extra: str) -> list[str]:
    return ["optimize", str(tmp / "data"), *extra]


# -- optimize: every data file, every way of being broken
_BROKEN_FILE: dict[str, str | bytes] = {
    "not-utf8": NOT_UTF8, "garbage": GARBAGE, "empty": b"", "deep-list": DEEP_JSON,
    "deep-object": DEEP_JSON_OBJ, "top-list": "[1, 2]", "truncated": '{"a": [1, 2',
}
for _file in DATA_FILES:
    for _kind, _content in _BROKEN_FILE.items():
        def _build(tmp: Path, f: str = _file, c: str | bytes = _content) -> list[str]:
            _write(tmp / "data", f, c)
            return _optimize(tmp, "-o", str(tmp / "out.json"))
        case(f"optimize-{_file.split('-')[0]}-{_kind}", _file)(_build)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@case("optimize-system-file-not-utf8", "system-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "small", "system-data.json", NOT_UTF8)
    return ["optimize", str(tmp / "small" / "system-data.json")]


@case("optimize-system-file-deep", "system-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "small", "system-data.json", DEEP_JSON_OBJ)
    return ["optimize", str(tmp / "small" / "system-data.json")]


@case("optimize-empty-server-list", "server-data.json", "servers")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "server-data.json", '{"servers": []}')
    return _optimize(tmp)


@case("optimize-servers-not-a-list", "server-data.json", "servers")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "server-data.json", '{"servers": 5}')
    return _optimize(tmp)


@case("optimize-nan-rate", "server-data.json", "arrivalRate")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "server-data.json",
               lambda d: d["servers"][0]["currentAlloc"]["load"].update(arrivalRate=float("nan")))
    return _optimize(tmp)


@case("optimize-negative-rate", "server-data.json", "arrivalRate")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "server-data.json",
               lambda d: d["servers"][0]["currentAlloc"]["load"].update(arrivalRate=-5))
    return _optimize(tmp)


@case("optimize-huge-rate", codes=(0, 2))
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "server-data.json",
               lambda d: d["servers"][0]["currentAlloc"]["load"].update(arrivalRate=1e15))
    return _optimize(tmp)


@case("optimize-huge-tokens", "server-data.json", "avgOutTokens")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "server-data.json",
               lambda d: d["servers"][0]["currentAlloc"]["load"].update(avgOutTokens=1e12))
    return _optimize(tmp)


@case("optimize-huge-max-batch", "model-data.json", "maxBatchSize")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "model-data.json",
               lambda d: d["models"][0].update(maxBatchSize=1_000_000_000))
    return _optimize(tmp)


@case("optimize-huge-capacity", codes=(0, 2))
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "capacity-data.json",
               lambda d: d["count"][0].update(count=10**15))
    return _optimize(tmp)


@case("optimize-scaled-batch-huge", codes=(0,))
def _(tmp: Path) -> list[str]:
    """maxBatchSize x atTokens / avgOutTokens at its bounds is 6.5·10¹¹: capped at MAX_BATCH,
    not a 69 TiB chain table (found by fuzzing)."""
    _edit_json(tmp / "data" / "model-data.json",
               lambda d: d["models"][0].update(maxBatchSize=65_536, atTokens=10_000_000))

    def one_token(d: dict) -> None:
        for server in d["servers"]:
            server["currentAlloc"]["load"]["AvgOutTokens"] = 1
    _edit_json(tmp / "data" / "server-data.json", one_token)
    return _optimize(tmp, "--batch-policy", "scaled")


@case("optimize-integer-too-long", "capacity-data.json", "count[0].count")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "capacity-data.json", '{"count": [{"type": "L4", "count": '
           + "9" * 5000 + "}]}")
    return _optimize(tmp, "-o", str(tmp / "out.json"))


@case("optimize-long-name", "model-data.json", "models[0].acc")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "model-data.json", lambda d: d["models"][0].update(acc="A" * 10**4))
    return _optimize(tmp, "-o", str(tmp / "out.json"))


@case("optimize-surrogate-in-name", "server-data.json", "servers[0].name")
def _(tmp: Path) -> list[str]:
    """JSON's "\\ud800" escape is a lone surrogate: printing the table raised
    UnicodeEncodeError after the output file was written."""
    path = tmp / "data" / "server-data.json"
    path.write_text(path.read_text().replace('"name": "', '"name": "\\ud800', 1))
    return _optimize(tmp, "-o", str(tmp / "out.json"))


@case("optimize-huge-penalty-factor", "optimizer-data.json", "accelPenaltyFactor")
def _(tmp: Path) -> list[str]:
    _edit_json(tmp / "data" / "optimizer-data.json",
               lambda d: d["optimizer"].update(accelPenaltyFactor=1e308))
    return _optimize(tmp, "--solver", "milp", "-o", str(tmp / "out.json"))


@case("optimize-duplicate-key", "optimizer-data.json", "duplicate key")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "optimizer-data.json",
           '{"optimizer": {"unlimited": false, "unlimited": true}}')
    return _optimize(tmp)


@case("optimize-data-dir-missing", "nowhere")
def _(tmp: Path) -> list[str]:
    return ["optimize", str(tmp / "nowhere")]


@case("optimize-data-file-is-dir", "model-data.json")
def _(tmp: Path) -> list[str]:
    (tmp / "data" / "model-data.json").unlink()
    (tmp / "data" / "model-data.json").mkdir()
    return _optimize(tmp)


@case("optimize-data-symlink-dev-zero", "model-data.json")
def _(tmp: Path) -> list[str]:
    (tmp / "data" / "model-data.json").unlink()
    (tmp / "data" / "model-data.json").symlink_to("/dev/zero")
    return _optimize(tmp)


@case("optimize-data-symlink-loop", "model-data.json")
def _(tmp: Path) -> list[str]:
    (tmp / "data" / "model-data.json").unlink()
    (tmp / "data" / "model-data.json").symlink_to(tmp / "data" / "model-data.json")
    return _optimize(tmp)


@case("optimize-output-is-dir", "cwd", "directory")
def _(tmp: Path) -> list[str]:
    return _optimize(tmp, "-o", str(tmp / "cwd"))


@case("optimize-output-missing-dir", "out.json", "does not exist")
def _(tmp: Path) -> list[str]:
    return _optimize(tmp, "-o", str(tmp / "missing" / "out.json"))


@case("optimize-output-under-file", "out.json", "not a directory")
def _(tmp: Path) -> list[str]:
    return _optimize(tmp, "-o", str(tmp / "afile.txt" / "out.json"))


@case("optimize-output-name-too-long", "cannot write the output", "too long")
def _(tmp: Path) -> list[str]:
    return _optimize(tmp, "-o", str(tmp / ("o" * 300 + ".json")))


@case("optimize-data-name-too-long", "cannot read", "too long")
def _(tmp: Path) -> list[str]:
    return ["optimize", str(tmp / ("d" * 300))]


# -- analyze
def _analyze(tmp: Path, **over: str) -> list[str]:
    opts = {"--model": "granite_13b", "--accelerator": "H100", "--rate-rpm": "30",
            "--in-tokens": "128", "--out-tokens": "64", **over}
    return ["analyze", "--data", str(tmp / "data"), *[x for kv in opts.items() for x in kv]]


for _flag, _value in (("--rate-rpm", "nan"), ("--rate-rpm", "-1"), ("--rate-rpm", "inf"),
                      ("--rate-rpm", "0"),
                      ("--rate-rpm", "1e12"), ("--in-tokens", "-5"),
                      ("--in-tokens", "1000000000"), ("--out-tokens", "0"),
                      ("--max-batch", "1000000000"), ("--max-batch", "-1"),
                      ("--max-queue", "1000000000"), ("--max-queue", "-1"),
                      ("--itl-ms", "nan"), ("--ttft-ms", "-3")):
    def _build(tmp: Path, f: str = _flag, v: str = _value) -> list[str]:
        return _analyze(tmp, **{f: v})
    case(f"analyze{_flag}={_value}", _flag)(_build)


@case("analyze-model-data-not-utf8", "model-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "model-data.json", NOT_UTF8)
    return _analyze(tmp)


@case("analyze-zero-perf-parms", "model-data.json", "granite_13b", "H100")
def _(tmp: Path) -> list[str]:
    def zero(d: dict) -> None:
        for m in d["models"]:
            if (m["name"], m["acc"]) == ("granite_13b", "H100"):
                m["perfParms"].update(alpha=0, beta=0, gamma=0)
    _edit_json(tmp / "data" / "model-data.json", zero)
    return _analyze(tmp)


@case("analyze-classic-rate-above-max", "--rate-rpm", "classic")
def _(tmp: Path) -> list[str]:
    return _analyze(tmp, **{"--rate-rpm": "900000", "--perf-model": "classic"})


@case("analyze-unknown-model", "model-data.json", "nope")
def _(tmp: Path) -> list[str]:
    return _analyze(tmp, **{"--model": "nope"})


# -- calibrate
def _calibrate(tmp: Path, *files: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["calibrate", *(files or (str(tmp / "bench.csv"),)), "--model", "granite_13b",
            "--accelerator", "H100", "--data", str(tmp / "data"), "--predictor", "analyzer",
            *extra]


_BAD_CSV: dict[str, tuple[str | bytes, str]] = {
    "not-utf8": (b"concurrency,in_tokens\n\xff\xfe,\xe9\n", "bench.csv"),
    "garbage": (GARBAGE, "bench.csv"),
    "empty": (b"", "bench.csv"),
    "header-only": ("concurrency,in_tokens,out_tokens,ttft_ms,itl_ms,throughput_rps\n",
                    "bench.csv"),
    "wrong-columns": ("a,b,c\n1,2,3\n", "bench.csv"),
    "seconds-not-ms": ("concurrency,in_tokens,out_tokens,ttft_s,itl_s,throughput_rps\n"
                       "1,128,64,0.04,0.008,1.9\n", "ttft_ms"),
    "text-value": (_set(BENCH_CSV, "40.0", "fast"), "bench.csv:2"),
    "nan-value": (_set(BENCH_CSV, "40.0", "nan"), "bench.csv:2"),
    "negative-itl": (_set(BENCH_CSV, "8.0", "-8.0"), "bench.csv:2"),
    "short-row": (BENCH_CSV + "1,2\n", "bench.csv:4"),
    "huge-concurrency": (_set(BENCH_CSV, "\n4,", "\n1000000000,"), "bench.csv:3"),
    "huge-tokens": (_set(BENCH_CSV, "\n4,128", "\n4,1000000000"), "bench.csv:3"),
}
for _kind, (_content, _name) in _BAD_CSV.items():
    def _build(tmp: Path, c: str | bytes = _content) -> list[str]:
        _write(tmp, "bench.csv", c)
        return _calibrate(tmp)
    case(f"calibrate-csv-{_kind}", _name)(_build)

_BAD_BENCH_JSON: dict[str, str | bytes] = {
    "not-utf8": NOT_UTF8, "deep": DEEP_JSON, "deep-object": DEEP_JSON_OBJ,
    "not-object": "[1, 2, 3]", "vllm-missing-keys": '{"mean_ttft_ms": 40}',
    "guidellm-bad-benchmarks": '{"benchmarks": [5]}', "lines-garbage": '{"a": 1}\nnot json\n',
    "nan-ttft": ('{"completed": 10, "request_rate": "inf", "max_concurrency": 1, '
                 '"total_input_tokens": 1280, "total_output_tokens": 640, "mean_ttft_ms": NaN, '
                 '"mean_tpot_ms": 8, "request_throughput": 1.9}'),
    "huge-concurrency": ('{"completed": 10, "request_rate": "inf", '
                         '"max_concurrency": 1000000000, "total_input_tokens": 1280, '
                         '"total_output_tokens": 640, "mean_ttft_ms": 40, "mean_tpot_ms": 8, '
                         '"request_throughput": 1.9}'),
}
for _kind, _content in _BAD_BENCH_JSON.items():
    def _build(tmp: Path, c: str | bytes = _content) -> list[str]:
        _write(tmp, "bench.json", c)
        return _calibrate(tmp, str(tmp / "bench.json"))
    case(f"calibrate-json-{_kind}", "bench.json")(_build)


@case("calibrate-num-requests-huge", "--num-requests")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--predictor", "twin", "--num-requests", "1000000000000"))


@case("calibrate-num-requests-negative", "--num-requests")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--predictor", "twin", "--num-requests", "-3"))


@case("calibrate-max-batch-huge", "--max-batch")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--max-batch", "1000000000"))


@case("calibrate-max-rms-nan", "--max-rms")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--max-rms", "nan"))


@case("calibrate-output-not-an-object", "m.json", "JSON object")
def _(tmp: Path) -> list[str]:
    _write(tmp, "m.json", "[1, 2]")
    return _calibrate(tmp, extra=("--output", str(tmp / "m.json")))


@case("calibrate-unknown-fit-param", "--fit", "delta")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--fit", "alpha,delta"))


@case("calibrate-output-is-dir", "cwd", "directory")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--output", str(tmp / "cwd")))


@case("calibrate-output-under-file", "model-data.json", "not a directory")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, extra=("--output", str(tmp / "afile.txt" / "model-data.json")))


@case("calibrate-output-existing-not-utf8", "m.json")
def _(tmp: Path) -> list[str]:
    _write(tmp, "m.json", NOT_UTF8)
    return _calibrate(tmp, extra=("--output", str(tmp / "m.json")))


@case("calibrate-bench-file-missing", "nope.csv")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, str(tmp / "nope.csv"))


@case("calibrate-bench-file-is-dir", "cwd")
def _(tmp: Path) -> list[str]:
    return _calibrate(tmp, str(tmp / "cwd"))


# -- sim bench
def _bench(tmp: Path, *extra: str) -> list[str]:
    return ["sim", "bench", "--data", str(tmp / "data"), "--model", "granite_13b",
            "--accelerator", "H100", "--input-tokens", "128", "--output-tokens", "64", *extra]


for _args, _flag in (
        (("--rate", "1", "--num-requests", "1000000000000"), "--num-requests"),
        (("--rate", "1", "--num-requests", "-5"), "--num-requests"),
        (("--rate", "1", "--duration", "1e12"), "--duration"),
        (("--rate", "1", "--duration", "nan"), "--duration"),
        (("--rate", "1e9", "--duration", "60"), "--rate"),
        (("--rate", "nan"), "--rate"),
        (("--rate", "-2"), "--rate"),
        (("--concurrency", "1000000000"), "--concurrency"),
        (("--concurrency", "0"), "--concurrency"),
        (("--rate", "1", "--replicas", "1000000000"), "--replicas"),
        (("--rate", "1", "--replicas", "0"), "--replicas"),
        (("--rate", "1", "--max-batch", "1000000000"), "--max-batch"),
        (("--rate", "1", "--kv-tokens", "-1"), "--kv-tokens"),
        (("--concurrency", "2", "--stagger", "1e15"), "--stagger"),
        (("--rate", "1", "--input-tokens", "1000000000"), "--input-tokens"),
        (("--rate", "1", "--input-tokens", "uniform:5:1"), "--input-tokens"),
        (("--rate", "1", "--output-tokens", "uniform:1:100000000"), "--output-tokens"),
        (("--concurrency", "2", "--think", "1e15"), "--think"),
        (("--concurrency", "1000", "--duration", "1e6"), "--concurrency"),
        (("--rate", "1", "--seed", "-1"), "--seed"),
):
    def _build(tmp: Path, a: tuple[str, ...] = _args) -> list[str]:
        return _bench(tmp, *a)
    case(f"sim-bench{'-'.join(('',) + _args)}", _flag)(_build)


@case("sim-bench-arrivals-not-utf8", "arrivals.txt")
def _(tmp: Path) -> list[str]:
    _write(tmp, "arrivals.txt", b"0.1\n0.\xff\n")
    return _bench(tmp, "--arrivals", str(tmp / "arrivals.txt"))


@case("sim-bench-arrivals-empty", "arrivals.txt")
def _(tmp: Path) -> list[str]:
    _write(tmp, "arrivals.txt", "")
    return _bench(tmp, "--arrivals", str(tmp / "arrivals.txt"))


@case("sim-bench-arrivals-huge-times", "arrivals.txt")
def _(tmp: Path) -> list[str]:
    _write(tmp, "arrivals.txt", "0\n1e15\n")
    return _bench(tmp, "--arrivals", str(tmp / "arrivals.txt"))


@case("sim-bench-token-file-garbage", "tokens.txt")
def _(tmp: Path) -> list[str]:
    _write(tmp, "tokens.txt", GARBAGE)
    return _bench(tmp, "--rate", "1", "--input-tokens", f"file:{tmp / 'tokens.txt'}")


@case("sim-bench-csv-under-file", "rows.csv")
def _(tmp: Path) -> list[str]:
    return _bench(tmp, "--rate", "1", "--num-requests", "20", "--csv",
                  str(tmp / "afile.txt" / "rows.csv"))


@case("sim-bench-csv-is-dir", "cwd")
def _(tmp: Path) -> list[str]:
    return _bench(tmp, "--rate", "1", "--num-requests", "20", "--csv", str(tmp / "cwd"))


@case("sim-bench-plot-missing-dir", "plot.png")
def _(tmp: Path) -> list[str]:
    return _bench(tmp, "--rate", "1,2", "--sweep", "--num-requests", "20", "--plot",
                  str(tmp / "missing" / "plot.png"))


@case("sim-bench-plot-name-too-long", "--plot", "too long")
def _(tmp: Path) -> list[str]:
    return _bench(tmp, "--rate", "1,2", "--sweep", "--num-requests", "20", "--plot",
                  str(tmp / ("p" * 300 + ".png")))


# -- sim run: the scenario file
def _run(tmp: Path, *extra: str) -> list[str]:
    return ["sim", "run", str(tmp / "scenario.yaml"), "--no-plots", *extra]


_BAD_SCENARIO_FILE: dict[str, str | bytes] = {
    "not-utf8": b"name: caf\xe9\nduration_s: 60\n", "garbage": GARBAGE, "empty": b"",
    "bom-then-garbage": b"\xef\xbb\xbf\x00\x01\x02", "deep-flow": DEEP_YAML_FLOW,
    "deep-block": DEEP_YAML_BLOCK, "billion-laughs": BILLION_LAUGHS,
    "top-list": "- 1\n- 2\n", "top-scalar": "42\n", "bad-syntax": "name: [unclosed\n",
    "python-tag": "name: !!python/object/apply:os.system ['true']\n",
    "tabs": "name: x\n\tduration_s: 5\n",
}
for _kind, _content in _BAD_SCENARIO_FILE.items():
    def _build(tmp: Path, c: str | bytes = _content) -> list[str]:
        _write(tmp, "scenario.yaml", c)
        return _run(tmp)
    case(f"sim-run-file-{_kind}", "scenario.yaml")(_build)

_BAD_SCENARIO_VALUE: dict[str, tuple[str, str, str]] = {
    "duration-1e12": ("duration_s: 120", "duration_s: 1.0e+12", "duration_s"),
    "duration-1e12-text": ("duration_s: 120", "duration_s: 1e12", "duration_s"),
    "duration-nan": ("duration_s: 120", "duration_s: .nan", "duration_s"),
    "duration-inf": ("duration_s: 120", "duration_s: .inf", "duration_s"),
    "duration-negative": ("duration_s: 120", "duration_s: -5", "duration_s"),
    "duration-string": ("duration_s: 120", "duration_s: long", "duration_s"),
    "rate-1e9": ("rate_rpm: 30", "rate_rpm: 1.0e+9", "rate_rpm"),
    "rate-1e7": ("rate_rpm: 30", "rate_rpm: 10000000", "rate_rpm"),
    "duration-1e7": ("duration_s: 120", "duration_s: 10000000", "duration_s"),
    "rate-negative": ("rate_rpm: 30", "rate_rpm: -30", "rate_rpm"),
    "replicas-1e9": ("replicas: 1\n", "replicas: 1000000000\n", "replicas"),
    "replicas-float": ("replicas: 1\n", "replicas: 1.5\n", "replicas"),
    "in-tokens-1e9": ("in_tokens: 128", "in_tokens: 1000000000", "in_tokens"),
    "out-tokens-1e9": ("out_tokens: 64", "out_tokens: 1000000000", "out_tokens"),
    "period-zero": ("period_s: 60", "period_s: 0", "period_s"),
    "period-tiny": ("period_s: 60", "period_s: 0.000001", "period_s"),
    "period-string": ("period_s: 60", "period_s: soon", "period_s"),
    "empty-servers": ("servers:\n", "servers: []\nx_servers:\n", "servers"),
    "servers-scalar": ("servers:\n", "servers: 5\nx_servers:\n", "servers"),
    "load-scalar": ("load: {rate_rpm: 30, in_tokens: 128, out_tokens: 64}", "load: 7", "load"),
    "unknown-key": ("seed: 1", "seed: 1\ncolour: blue", "colour"),
    "unknown-nested-key": ("period_s: 60", "period_s: 60, perod: 3", "perod"),
    "duplicate-key": ("seed: 1", "seed: 1\nseed: 2", "seed"),
    "name-escape": ("name: tiny", "name: ../../escape", "name"),
    "name-absolute": ("name: tiny", "name: /tmp/escape", "name"),
    "name-empty": ("name: tiny", "name: ''", "name"),
    "name-list": ("name: tiny", "name: [a, b]", "name"),
    "data-missing": ("data: data", "data: nowhere", "nowhere"),
    "unknown-model": ("model: granite_13b", "model: nope", "nope"),
    "unknown-policy": ("name: inferno}", "name: magic}", "magic"),
    "seed-huge": ("seed: 1", "seed: 1e300", "seed"),
    "seed-negative": ("seed: 1", "seed: -1", "seed"),
    "missing-servers": ("servers:\n", "x_servers:\n", "servers"),
    "trace-missing": ("seed: 1", "seed: 1\ntrace: {path: nope.csv}", "nope.csv"),
    "emulator-interval-zero": ("seed: 1", "seed: 1\nemulator: {interval_s: 0}", "interval_s"),
    "startup-huge": ("seed: 1", "seed: 1\ntwin: {startup: {kind: fixed, mean_s: 1e300}}",
                     "mean_s"),
    "phases-huge-duration": ("seed: 1", "seed: 1\nprofile: {phases: [{duration_s: 1e12}]}",
                             "duration_s"),
    "diurnal-huge-pieces": ("seed: 1", "seed: 1\nprofile: {diurnal: {period_s: 1, "
                            "pieces: 1000000000}}", "MAX_SIM_STEPS"),
    "diurnal-huge-period": ("seed: 1", "seed: 1\nprofile: {diurnal: {period_s: 1e12}}",
                            "period_s"),
    # found by mutation fuzzing
    "rate-long-string": ("rate_rpm: 30", "rate_rpm: " + "a" * 5000, "rate_rpm"),
    "accelerator-long-name": ("accelerator: H100", "accelerator: " + "H" * 5000, "accelerator"),
    "min-replicas-1e300": ("replicas: 1\n", "replicas: 1\n    min_replicas: 1.0e+300\n",
                           "min_replicas"),
    "min-replicas-huge": ("replicas: 1\n", "replicas: 1\n    min_replicas: 100000\n",
                          "min_replicas"),
    "controller-min-replicas-huge": ("period_s: 60", "period_s: 60, min_replicas: 100000",
                                     "min_replicas"),
    "replicas-2**64": ("replicas: 1\n", "replicas: 18446744073709551616\n", "replicas"),
    "scrape-interval-tiny": ("seed: 1", "seed: 1\ntwin: {scrape_interval_s: 1.0e-6}",
                             "scrape_interval_s"),
    "data-home-of-no-user": ("data: data", "data: ~no-such-user-here/data", "data"),
    "data-name-too-long": ("data: data", "data: " + "d" * 300, "data"),
    "data-nul": ("data: data", 'data: "da\\0ta"', "data"),
    "trace-path-nul": ("seed: 1", 'seed: 1\ntrace: {path: "t\\0.csv"}', "trace.path"),
    "length-cv-1e300": ("out_tokens: 64}", "out_tokens: 64, length_cv: 1.0e+300}", "length_cv"),
    "arrival-cv-1e300": ("out_tokens: 64}", "out_tokens: 64, arrivals: gamma, "
                         "arrival_cv: 1.0e+300}", "arrival_cv"),
    "arrival-cv-1e10": ("out_tokens: 64}", "out_tokens: 64, arrivals: gamma, "
                        "arrival_cv: 1.0e+10}", "arrival_cv"),
    "hpa-sync-period-tiny": ("name: inferno}", "name: hpa, hpa: {sync_period_s: 1.0e-6}}",
                             "sync_period_s"),
    "itl-bounds-three": ("name: inferno}", "name: inferno, inferno: {correction: "
                         "{itl_bounds: [0.5, 2, 3]}}}", "itl_bounds"),
    "migration-penalty-1e300": ("name: inferno}", "name: inferno, inferno: "
                                "{migration_penalty: 1.0e+300}}", "migration_penalty"),
    "tuner-seed-two": ("period_s: 60", "period_s: 60, tuner_settings: {seed: [5, 0.05]}",
                       "seed"),
    "capacity-long-key": ("seed: 1", "seed: 1\ncapacity:\n  ? " + "K" * 5000 + "\n  : 3",
                          "capacity.KKK"),
    "accelerators-long-name": ("seed: 1", "seed: 1\naccelerators: [H100, " + "A" * 5000 + "]",
                               "accelerators[1]"),
    "perf-scale-1e100": ("period_s: 60", "period_s: 60, perf_scale: {gamma: 1.0e+100}",
                         "gamma"),
    "engine-block-size-zero": ("seed: 1", "seed: 1\ntwin: {engine: {block_size: 0}}",
                               "twin: engine.block_size"),
    "engine-max-waiting-negative": ("seed: 1", "seed: 1\ntwin: {engine: {max_waiting: -1}}",
                                    "twin: engine.max_waiting"),
    "max-model-len-too-small": ("out_tokens: 64}", "out_tokens: 64, max_model_len: 2}",
                                "servers[0].load.max_model_len"),
}
for _kind, (_old, _new, _field) in _BAD_SCENARIO_VALUE.items():
    def _build(tmp: Path, old: str = _old, new: str = _new) -> list[str]:
        _write(tmp, "scenario.yaml", _set(SCENARIO, old, new))
        return _run(tmp)
    _names = ("scenario.yaml", _field)
    if _kind in ("data-missing", "trace-missing"):  # the scenario's key, then the path
        _names += ("scenario.yaml: data:" if _kind == "data-missing" else
                   "scenario.yaml: trace.path:",)
    case(f"sim-run-{_kind}", *_names)(_build)


@case("sim-run-data-file-not-utf8", "model-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "model-data.json", NOT_UTF8)
    return _run(tmp)


@case("sim-run-trace-not-utf8", "trace.csv")
def _(tmp: Path) -> list[str]:
    _write(tmp, "trace.csv", b"arrival_s,input_tokens,output_tokens\n\xff,1,1\n")
    _write(tmp, "scenario.yaml", _set(SCENARIO, "seed: 1", "seed: 1\ntrace: {path: trace.csv}"))
    return _run(tmp)


for _kind, _rows in (("huge-int-tokens", "0,1," + "9" * 5000 + "\n"),
                     ("long-row", "0,1,1," + "x" * 5000 + "\n"),
                     ("long-arrival", "a" * 5000 + ",1,1\n")):
    def _build(tmp: Path, rows: str = _rows) -> list[str]:
        _write(tmp, "trace.csv", "arrival_s,input_tokens,output_tokens\n" + rows)
        _write(tmp, "scenario.yaml", _set(SCENARIO, "seed: 1",
                                          "seed: 1\ntrace: {path: trace.csv}"))
        return _run(tmp)
    case(f"sim-run-trace-{_kind}", "trace.csv:2")(_build)


@case("sim-run-trace-huge-arrival", codes=(0, 2))
def _(tmp: Path) -> list[str]:
    _write(tmp, "trace.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n1e13,1,1\n")
    _write(tmp, "scenario.yaml", _set(SCENARIO, "seed: 1", "seed: 1\ntrace: {path: trace.csv}"))
    return _run(tmp)


for _text, _name in (("duration_s=1.0e+12", "duration_s"),
                     ("servers.0.replicas=1000000000", "replicas"),
                     ("servers.0.load.rate_rpm=1.0e+9", "rate_rpm"), ("nokey", "--set"),
                     ("servers.9.replicas=1", "servers.9"), ("=3", "--set"),
                     ("name=../x", "name"), ("seed=[unclosed", "--set seed"),
                     (f"controller={DEEP_YAML_FLOW}", "--set controller")):
    def _build(tmp: Path, t: str = _text) -> list[str]:
        return _run(tmp, "--set", t)
    case(f"sim-run-set-{_text[:30]}", _name)(_build)


@case("sim-run-out-under-file", "afile.txt")
def _(tmp: Path) -> list[str]:
    return _run(tmp, "--out", str(tmp / "afile.txt" / "run"))


@case("sim-run-out-name-too-long", "--out", "too long")
def _(tmp: Path) -> list[str]:
    return _run(tmp, "--out", str(tmp / ("r" * 300)))


@case("sim-run-out-is-file", "afile.txt")
def _(tmp: Path) -> list[str]:
    return _run(tmp, "--out", str(tmp / "afile.txt"))


@case("sim-run-scenario-is-dir", "cwd")
def _(tmp: Path) -> list[str]:
    return ["sim", "run", str(tmp / "cwd")]


@case("sim-run-scenario-missing", "nope.yaml")
def _(tmp: Path) -> list[str]:
    return ["sim", "run", str(tmp / "nope.yaml")]


@case("sim-run-unknown-policy-flag", "--policy", "magic")
def _(tmp: Path) -> list[str]:
    return _run(tmp, "--policy", "magic")


# -- sim replay
@case("sim-replay-missing-dir", "nope")
def _(tmp: Path) -> list[str]:
    return ["sim", "replay", str(tmp / "nope")]


@case("sim-replay-dir-is-file", "afile.txt")
def _(tmp: Path) -> list[str]:
    return ["sim", "replay", str(tmp / "afile.txt")]


@case("sim-replay-scenario-not-utf8", "scenario.yaml")
def _(tmp: Path) -> list[str]:
    (tmp / "rec").mkdir()
    _write(tmp / "rec", "scenario.yaml", b"name: \xff\n")
    _write(tmp / "rec", "requests.csv", "arrival_s,input_tokens,output_tokens\n")
    return ["sim", "replay", str(tmp / "rec")]


@case("sim-replay-recorded-huge-run", "scenario.yaml", "MAX_SIM_DURATION_S")
def _(tmp: Path) -> list[str]:
    (tmp / "rec").mkdir()
    _write(tmp / "rec", "scenario.yaml", _set(SCENARIO, "duration_s: 120", "duration_s: 1e12")
           .replace("data: data", f"data: {tmp / 'data'}"))
    for name in ("trace.csv", "cycles.jsonl"):
        _write(tmp / "rec", name, "")
    return ["sim", "replay", str(tmp / "rec")]


@case("sim-replay-empty-dir", "rec")
def _(tmp: Path) -> list[str]:
    (tmp / "rec").mkdir()
    return ["sim", "replay", str(tmp / "rec")]


# -- sweep
def _sweep(tmp: Path, *extra: str) -> list[str]:
    return ["sweep", str(tmp / "sweep.yaml"), "--workers", "1", *extra]


_BAD_SWEEP: dict[str, tuple[str | bytes, str]] = {
    "not-utf8": (b"name: \xff\n", "sweep.yaml"),
    "deep": (DEEP_YAML_FLOW, "sweep.yaml"),
    "billion-laughs": (BILLION_LAUGHS, "sweep.yaml"),
    "empty": (b"", "sweep.yaml"),
    "seeds-1e9": (_set(SWEEP, "seeds: 1", "seeds: 1000000000"), "seeds"),
    "grid-huge": (_set(SWEEP, "[15]", "[" + ", ".join(str(i) for i in range(5000)) + "]")
                  + "  twin.startup.kind: [" + ", ".join(["fixed"] * 5000) + "]\n", "grid"),
    "policy-unknown": (_set(SWEEP, "[inferno]", "[magic]"), "magic"),
    "scenario-missing": (_set(SWEEP, "scenario.yaml", "nope.yaml"), "nope.yaml"),
    "name-escape": (_set(SWEEP, "tiny-sweep", "../../escape"), "name"),
    "set-huge-duration": (SWEEP + "set: {duration_s: 1.0e+12}\n", "duration_s"),
    "grid-huge-rate": (_set(SWEEP, "twin.startup.mean_s: [15]",
                            "servers.0.load.rate_rpm: [30, 1e9]"), "rate_rpm"),
    "unknown-key": (SWEEP + "colour: blue\n", "colour"),
    "scenario-nul": (_set(SWEEP, "scenario.yaml", '"scen\\0ario.yaml"'), "scenario"),
    "seeds-long-string": (_set(SWEEP, "seeds: 1", "seeds: " + "s" * 5000), "seeds"),
    "scenario-is-dir": (_set(SWEEP, "scenario.yaml", "cwd"), "scenario"),
    "grid-long-value": (_set(SWEEP, "[15]", "[" + "m" * 5000 + "]"), "twin.startup.mean_s"),
    "policy-long-name": (_set(SWEEP, "[inferno]", "[" + "p" * 5000 + "]"), "policies[0]"),
}
for _kind, (_content, _name) in _BAD_SWEEP.items():
    def _build(tmp: Path, c: str | bytes = _content) -> list[str]:
        _write(tmp, "sweep.yaml", c)
        return _sweep(tmp)
    _in_scenario = _kind == "set-huge-duration"
    _names = (_name,) if _in_scenario else ("sweep.yaml", _name)
    if _kind in ("scenario-missing", "scenario-is-dir"):
        _names += ("sweep.yaml: scenario:",)
    case(f"sweep-{_kind}", *_names)(_build)


@case("sweep-out-under-file", "afile.txt")
def _(tmp: Path) -> list[str]:
    return _sweep(tmp, "--out", str(tmp / "afile.txt" / "sw"))


# -- live, emulate, load-noise: bad input is found before any cluster is contacted
@case("live-policy-settings-not-utf8", "settings.yaml")
def _(tmp: Path) -> list[str]:
    _write(tmp, "settings.yaml", b"lead_s: \xff\n")
    return ["live", "--dry-run", "--policy-settings", str(tmp / "settings.yaml"),
            "--data-path", str(tmp / "data")]


@case("live-policy-settings-deep", "settings.yaml")
def _(tmp: Path) -> list[str]:
    _write(tmp, "settings.yaml", DEEP_YAML_FLOW)
    return ["live", "--dry-run", "--policy-settings", str(tmp / "settings.yaml"),
            "--data-path", str(tmp / "data")]


@case("live-policy-settings-unknown-key", "settings.yaml", "colour")
def _(tmp: Path) -> list[str]:
    _write(tmp, "settings.yaml", "colour: blue\n")
    return ["live", "--dry-run", "--policy-settings", str(tmp / "settings.yaml"),
            "--data-path", str(tmp / "data")]


@case("live-policy-settings-bounds-of-one", "settings.yaml", "ttft_bounds")
def _(tmp: Path) -> list[str]:
    _write(tmp, "settings.yaml", "correction: {ttft_bounds: [2]}\n")
    return ["live", "--dry-run", "--policy-settings", str(tmp / "settings.yaml"),
            "--data-path", str(tmp / "data")]


@case("live-data-not-utf8", "model-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "model-data.json", NOT_UTF8)
    return ["live", "--dry-run", "--data-path", str(tmp / "data")]


@case("live-period-negative", "-5")
def _(tmp: Path) -> list[str]:
    return ["live", "-5", "--dry-run", "--data-path", str(tmp / "data")]


for _args, _name in ((["abc"], "INTERVAL"), (["0"], "INTERVAL"), (["-5"], "INTERVAL"),
                     (["nan"], "INTERVAL"), (["60", "nan"], "ALPHA"), (["60", "-1"], "ALPHA")):
    def _build(tmp: Path, a: list[str] = _args) -> list[str]:
        return ["load-noise", *a]
    case(f"load-noise-{'-'.join(_args)}", _name)(_build)


@case("emulate-data-not-utf8", "model-data.json")
def _(tmp: Path) -> list[str]:
    _write(tmp / "data", "model-data.json", NOT_UTF8)
    return ["emulate", "--data-path", str(tmp / "data"), "--targets-file",
            str(tmp / "targets.json")]


for _flag, _value in (("--speedup", "0"), ("--speedup", "nan"), ("--poll", "-1"),
                      ("--startup", "1e300"), ("--scrape-interval", "0"), ("--port", "70000"),
                      ("--max-model-len", "1000000000"), ("--duration", "-1")):
    def _build(tmp: Path, f: str = _flag, v: str = _value) -> list[str]:
        return ["emulate", "--data-path", str(tmp / "data"), "--targets-file",
                str(tmp / "targets.json"), f, v]
    case(f"emulate{_flag}={_value}", _flag)(_build)


@case("emulate-prometheus-config-under-file", "prometheus.yml")
def _(tmp: Path) -> list[str]:
    return ["emulate", "--data-path", str(tmp / "data"), "--targets-file",
            str(tmp / "targets.json"), "--prometheus-config",
            str(tmp / "afile.txt" / "prometheus.yml")]


@case("emulate-targets-file-is-dir", "cwd")
def _(tmp: Path) -> list[str]:
    return ["emulate", "--data-path", str(tmp / "data"), "--targets-file", str(tmp / "cwd")]


# --------------------------------------------------------------------------- the checks
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (and root's parent's entries) with its size and mtime."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            seen[str(p)] = (0, 0) if p.is_dir() and not p.is_symlink() else (
                st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A good world in tmp/w (the command runs in tmp/w/cwd, so a default runs/ lands there
    and an escaping name would land in tmp/w or tmp); no cluster is reachable."""
    base = tmp_path / "w"
    base.mkdir()
    _world(base)
    monkeypatch.chdir(base / "cwd")
    for var in ("KUBECONFIG", "INFERNO_PROMETHEUS_URL", "INFERNO_DATA_PATH",
                "INFERNO_POLICY_SETTINGS", "INFERNO_CONTROL_PERIOD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(base / "no-kubeconfig"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = _vm_size()
    cap = used + 4 * 2**30
    if used and (hard == resource.RLIM_INFINITY or cap < hard):
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield base
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_battery_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("bad", [pytest.param(c, id=c.id) for c in CASES])
def test_malformed_input_exits_2_with_a_short_error(bad: Case, world: Path) -> None:
    argv = bad.build(world)
    before = _snapshot(world.parent)
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    err = result.stderr
    assert "Traceback" not in result.output + err
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in bad.codes, f"exit {result.exit_code}; {result.stdout=!r} {err=}"
    if result.exit_code == 0:  # well-formed after all, and done within the timeout
        return
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 4, err
    assert max(map(len, lines)) <= MAX_LINE, "an error line longer than a screen or two"
    for name in bad.names:
        assert name in err, f"{name!r} not in {err!r}"
    assert _snapshot(world.parent) == before, "files created or changed"


def test_many_problems_print_three_lines_and_a_count() -> None:
    exc = ConfigError("a.json: x: bad", tuple(f"a.json: x{i}: bad\nsecond half" for i in range(7)))
    lines = error_lines(exc)
    assert lines == ["ConfigError: a.json: x0: bad second half",
                     "ConfigError: a.json: x1: bad second half",
                     "ConfigError: a.json: x2: bad second half",
                     "... and 4 more problems"]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Editors on Windows start UTF-8 files with a BOM: not an error."""
    shutil.copytree(SMALL, tmp_path / "data")
    (tmp_path / "data" / "system-data.json").unlink()
    for name in DATA_FILES:
        path = tmp_path / "data" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = CliRunner().invoke(cli, ["optimize", str(tmp_path / "data"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["allocations"]
