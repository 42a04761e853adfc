"""The names of the control policies, importable without importing any policy.

`inferno.control.policies.POLICY_TABLE` maps each of these names to its class, settings and
builder, in this order (a test pins the two together). The names live here so that command
help (`sim run --policy`, `live --policy`, `sim schema --policy`) costs no import of the
control package, which brings the optimizer and the tuner's scipy (~0.2 s of start-up).
"""

POLICY_NAMES: tuple[str, ...] = ("inferno", "oracle", "hpa", "saturation", "static")
"""Every policy name, in `POLICY_TABLE`'s order."""
TWIN_ONLY_POLICY_NAMES: tuple[str, ...] = ("oracle",)
"""Policies that need the world's future load, which only the twin knows (refused live)."""
LIVE_POLICY_NAMES: tuple[str, ...] = tuple(n for n in POLICY_NAMES
                                           if n not in TWIN_ONLY_POLICY_NAMES)
"""The policies a live cluster can run."""


def one_of(names: tuple[str, ...]) -> str:
    """``"a, b or c"`` for help texts."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
