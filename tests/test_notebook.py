"""examples/transfer.ipynb runs top to bottom in a real Jupyter kernel, offline: the digits study
through the Python API, its report's tables and figures, and an error caught as an exception."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "transfer.ipynb"


@pytest.mark.slow
def test_the_example_notebook_runs_top_to_bottom_in_a_jupyter_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # ipykernel's python3 kernel; jupyter_client starts it with this interpreter (sys.executable), the venv's.
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = ["".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)
               for cell in notebook.cells if cell.cell_type == "code"]
    assert "test acc" in outputs[1] and "digits (classes 5-9)" in outputs[1]
    assert "difference_mean" in outputs[3]
    assert outputs[4].splitlines()[0].startswith(("transfer helps", "transfer hurts", "no transfer effect", "mixed"))
    figure = next(cell for cell in notebook.cells if "report.figures" in cell.source and cell.cell_type == "code")
    assert any("image/png" in output.get("data", {}) for output in figure.outputs)  # shown inline
    assert "refused: data.classes=[3] is not allowed" in outputs[6]
    assert (tmp_path / "outputs" / "digits-report" / "report.md").is_file()

