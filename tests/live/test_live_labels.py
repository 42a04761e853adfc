"""Label contract of managed Deployments (docs/design/control-loop.md §2.1)."""

from __future__ import annotations

import pytest

from inferno.errors import ConfigError
from live.labels import ServerLabels, is_valid_label_value, parse_labels

FULL = {
    "inferno.server.managed": "true",
    "inferno.server.name": "Premium-llama_13b",
    "inferno.server.model": "llama_13b",
    "inferno.server.class": "Premium",
    "inferno.server.allocation.accelerator": "A100",
    "inferno.server.allocation.maxbatchsize": "64",
    "inferno.server.allocation.maxqueuesize": "640",
    "inferno.server.load.rpm": "60",
    "inferno.server.load.numtokens": "1024",
}


def test_full_label_set_is_read() -> None:
    """Every label of the seed's sample Deployment lands in its field."""
    assert parse_labels(FULL) == ServerLabels(
        name="Premium-llama_13b", model="llama_13b", class_name="Premium", accelerator="A100",
        max_batch=64, max_queue_size=640, load_rpm=60.0, load_in_tokens=None,
        load_out_tokens=1024.0)


def test_missing_optional_labels_take_defaults() -> None:
    """No class → Free; no allocation/load labels → no accelerator, max batch 0, no queue/load."""
    labels = {"inferno.server.name": "s", "inferno.server.model": "m"}
    assert parse_labels(labels) == ServerLabels(name="s", model="m", class_name="Free")


def test_outtokens_label_wins_over_numtokens() -> None:
    """The newer .load.outtokens overrides the seed's .load.numtokens; .intokens is read."""
    labels = {**FULL, "inferno.server.load.outtokens": "300",
              "inferno.server.load.intokens": "128"}
    parsed = parse_labels(labels)
    assert (parsed.load_in_tokens, parsed.load_out_tokens) == (128.0, 300.0)


@pytest.mark.parametrize(("key", "value"), [
    ("inferno.server.name", ""),
    ("inferno.server.model", "  "),
    ("inferno.server.load.rpm", "fast"),
    ("inferno.server.load.rpm", "-3"),
    ("inferno.server.load.rpm", "nan"),
    ("inferno.server.load.numtokens", "inf"),
    ("inferno.server.allocation.maxbatchsize", "8.5"),
    ("inferno.server.allocation.maxbatchsize", "-1"),
    ("inferno.server.allocation.maxqueuesize", "²"),
], ids=["empty-name", "blank-model", "rpm-word", "rpm-negative", "rpm-nan", "tokens-inf",
        "maxbatch-fraction", "maxbatch-negative", "maxqueue-superscript"])
def test_malformed_label_names_label_and_value(key: str, value: str) -> None:
    """A malformed label raises ConfigError whose message names the label."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_labels({**FULL, key: value})


@pytest.mark.parametrize(("value", "valid"), [
    ("A100", True), ("2xAIU2", True), ("Premium-llama_13b", True), ("", True),
    ("-A100", False), ("A100.", False), ("a/b", False), ("x" * 64, False), ("x" * 63, True),
], ids=["plain", "digit-first", "inner-symbols", "empty", "leading-dash", "trailing-dot",
        "slash", "too-long", "max-length"])
def test_label_value_syntax(value: str, valid: bool) -> None:
    """Kubernetes label values: <= 63 chars, alphanumeric ends, [-_.] inside."""
    assert is_valid_label_value(value) is valid
