"""Booleans written as text (environment variables, positional arguments): one set of words.

Go's strconv.ParseBool words (upstream reads its variables with it) plus yes/no, y/n and
on/off, in any case; empty is false (an unset-but-present variable).
"""

from __future__ import annotations

from inferno.errors import ConfigError

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "parse_bool"]

TRUE_WORDS = frozenset({"1", "t", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "f", "false", "no", "n", "off", ""})


def parse_bool(text: str, *, source: str) -> bool:
    """`text` as a boolean; anything else raises ConfigError naming `source` and the value."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(f"{source}: must be true or false, got {text!r}")
