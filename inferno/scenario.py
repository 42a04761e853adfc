"""Deprecated home of the scenario schema: import `sim.scenario` instead.

Scenarios are the twin's configuration, so they moved to `sim.scenario`; their generic YAML
binder (`load_settings`, used by live mode for ``--policy-settings``) moved to
`inferno.io.yamlbind`. This module re-exports the public names for user scripts, with a
DeprecationWarning; it will be removed in a later release.
"""

import warnings

from inferno.io.yamlbind import load_settings
from sim.scenario import *  # noqa: F403
from sim.scenario import __all__ as _moved

warnings.warn("inferno.scenario is deprecated: import sim.scenario (load_settings: "
              "inferno.io.yamlbind)", DeprecationWarning, stacklevel=2)

__all__ = [*_moved, "load_settings"]


def __getattr__(name: str) -> object:
    """Names `sim.scenario` keeps only as deprecated ones (it warns)."""
    import sim.scenario

    return getattr(sim.scenario, name)
