"""Names that moved inside live still import from their old module, with a warning."""

from __future__ import annotations

import pytest

from live import emulate, load_noise


@pytest.mark.parametrize("name", ["DeploymentReader", "DeploymentStatusWriter"])
def test_emulate_readers_moved_to_live_emulate(name: str) -> None:
    with pytest.warns(DeprecationWarning, match="import it from live.emulate"):
        assert getattr(load_noise, name) is getattr(emulate, name)


def test_unknown_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        _ = load_noise.DeploymentWriter  # type: ignore[attr-defined]
