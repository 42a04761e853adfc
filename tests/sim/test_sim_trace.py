"""Trace replay: the documented CSV/JSONL format, the shipped samples, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import simpy

from inferno.errors import ConfigError
from sim.request import Request
from sim.trace import TraceRow, read_trace, replay
from sim.workload import RequestFactory

TRACES = Path(__file__).resolve().parents[2] / "scenarios" / "traces"


def test_sample_csv_trace_loads_sorted():
    """scenarios/traces/sample.csv: 1,888 rows over 10 minutes, sorted, lengths >= 1."""
    rows = read_trace(TRACES / "sample.csv")
    assert len(rows) == 1888
    times = [r.arrival_s for r in rows]
    assert times == sorted(times)
    assert times[0] >= 0
    assert times[-1] < 600
    assert min(min(r.input_tokens, r.output_tokens) for r in rows) >= 1
    assert all(r.input_tokens + r.output_tokens <= 4096 for r in rows)


def test_sample_jsonl_trace_names_two_servers():
    """scenarios/traces/sample.jsonl: 200 rows, each for one of two sample servers."""
    rows = read_trace(TRACES / "sample.jsonl")
    assert len(rows) == 200
    assert {r.server for r in rows} == {"Premium-granite_13b", "Bronze-llama3_8b"}


def test_csv_columns_in_any_order_with_comments_and_optional_server(tmp_path):
    """Header order is free, '#' and blank lines are skipped, rows are sorted stably."""
    path = tmp_path / "t.csv"
    path.write_text("# comment\n\noutput_tokens,server,arrival_s,input_tokens\n"
                    "5,a,2.0,10\n7,,1.0,20\n9,b,1.0,30\n")
    assert read_trace(path) == [
        TraceRow(arrival_s=1.0, input_tokens=20, output_tokens=7, server=""),
        TraceRow(arrival_s=1.0, input_tokens=30, output_tokens=9, server="b"),
        TraceRow(arrival_s=2.0, input_tokens=10, output_tokens=5, server="a"),
    ]


@pytest.mark.parametrize(("name", "text", "match"), [
    ("t.csv", "arrival_s,input_tokens\n1,2\n", r"t.csv:1: header .* missing \['output_tokens'\]"),
    ("t.csv", "arrival_s,input_tokens,output_tokens,model\n", r"t.csv:1: .*unknown \['model'\]"),
    ("t.csv", "arrival_s,input_tokens,output_tokens\n1,2,3\nx,2,3\n", r"t.csv:3: arrival_s"),
    ("t.csv", "arrival_s,input_tokens,output_tokens\n1,0,3\n", r"t.csv:2: input_tokens"),
    ("t.csv", "arrival_s,input_tokens,output_tokens\n1,2\n", r"t.csv:2: expected 3 fields"),
    ("t.csv", "arrival_s,input_tokens,output_tokens\n-1,2,3\n", r"t.csv:2: arrival_s .*>= 0"),
    ("t.jsonl", '{"arrival_s": 1, "input_tokens": 2, "output_tokens": 3}\n{oops\n',
     r"t.jsonl:2: not valid JSON"),
    ("t.jsonl", '{"arrival_s": 1, "input_tokens": 2.5, "output_tokens": 3}\n',
     r"t.jsonl:1: input_tokens must be an integer"),
    ("t.jsonl", '{"arrival_s": 1, "input_tokens": 2}\n', r"t.jsonl:1: output_tokens is missing"),
    ("t.jsonl", '{"arrival_s": 1, "input_tokens": 2, "output_tokens": 3, "x": 1}\n',
     r"t.jsonl:1: unknown key"),
    ("t.txt", "", r"unknown trace format"),
], ids=["missing-col", "unknown-col", "bad-time", "zero-tokens", "short-row", "negative",
        "bad-json", "float-tokens", "missing-key", "unknown-key", "extension"])
def test_bad_trace_lines_name_file_line_and_field(tmp_path, name, text, match):
    """Every unreadable line is one ConfigError with file:line and the field."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_trace(path)


def test_missing_trace_file_is_a_config_error(tmp_path):
    """A trace that cannot be read names the path."""
    with pytest.raises(ConfigError, match="cannot read trace"):
        read_trace(tmp_path / "none.csv")


def test_replay_submits_at_recorded_times_with_servers():
    """Replay stamps each request at start_s + arrival_s, with the row's or default server."""
    env = simpy.Environment()
    got: list[tuple[float, Request]] = []
    rows = [TraceRow(arrival_s=0.5, input_tokens=3, output_tokens=4),
            TraceRow(arrival_s=0.5, input_tokens=5, output_tokens=6, server="b"),
            TraceRow(arrival_s=2.0, input_tokens=7, output_tokens=8)]
    replay(env, rows, lambda r: got.append((env.now, r)), RequestFactory(),
           default_server="a", start_s=10.0)
    env.run()
    assert [(t, r.id, r.server, r.in_tokens, r.out_tokens) for t, r in got] == [
        (10.5, 0, "a", 3, 4), (10.5, 1, "b", 5, 6), (12.0, 2, "a", 7, 8)]
