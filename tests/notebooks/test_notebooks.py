"""Every notebook in notebooks/ runs top to bottom against a generated lake, so none can rot."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
# Text a notebook must print besides running: the cells whose output is the point.
EXPECTED = {
    "lake_tour.ipynb": ["SQL and stats.metrics agree on attempts, answered, asr"],
}
CELL_TIMEOUT = 600  # seconds against a hang; the whole tour takes a few on the small lake


def test_notebooks_exist_and_are_stored_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks in notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(
    path: Path, small_lake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDRFLOW_HOME", str(small_lake_home))
    # Only the kernelspec ipykernel installed in this environment: jupyter_client starts its
    # `python` as sys.executable, so the kernel imports this checkout's packages.
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    nb = nbformat.read(path, as_version=4)
    cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        # The notebook's working directory: anything it writes stays out of the tree.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on a failure

    *ran, probe = nb.cells
    assert probe.outputs[0]["text"].strip() == sys.executable
    outputs = [o for c in ran[:cells] if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no chart"
    printed = "".join(o["text"] for o in outputs if o["output_type"] == "stream")
    for text in EXPECTED.get(path.name, []):
        assert text in printed, f"{path.name} did not print {text!r}"
