"""notebooks/compare_policies.ipynb: stored without outputs, and runs top to bottom."""

from __future__ import annotations

import nbformat
from closedloop_helpers import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "compare_policies.ipynb"


def test_notebook_is_stored_without_outputs():
    """No code cell carries outputs or an execution count in the repository."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes():
    """The notebook runs its small sweep and draws both figures without an error."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 2
