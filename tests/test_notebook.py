"""examples/sketch_rnn.ipynb runs from top to bottom in a Jupyter kernel (nbclient), as a reader runs
it, and every section shows its drawings; it is kept in git without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "sketch_rnn.ipynb"
MAGENTA_SHEEP = ROOT.parent / "shared" / "data" / "magenta_models" / "sheep.gen.json"  # as the notebook finds it
CELL_TIMEOUT_S = 120


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in _code_cells(nb))


@pytest.mark.slow
def test_the_notebook_runs_and_draws(monkeypatch):
    from jupyter_client.kernelspec import NoSuchKernel

    # the kernel imports this checkout's sketchvae (an editable install does the same), on one thread
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.km = client.create_kernel_manager()
        client.start_new_kernel()
        client.start_new_kernel_client()
    except (NoSuchKernel, RuntimeError, TimeoutError) as err:
        if client.km is not None and client.km.has_kernel:
            client.km.shutdown_kernel(now=True)
        pytest.skip(f"no Jupyter kernel could be started here: {err}")
    client.execute()  # on the kernel started above, shut down at the end; a failing cell raises CellExecutionError

    svgs, text = [], []
    for cell in _code_cells(nb):
        for out in cell.outputs:
            assert out.output_type != "error", out
            if "image/svg+xml" in out.get("data", {}):
                svgs.append(out.data["image/svg+xml"])
            text.append(out.get("text", ""))
    # sample 1, temperatures 4, people 1, reconstructions 1, interpolation 1, completions 1, classes 3, Magenta 1
    assert len(svgs) == 12 + MAGENTA_SHEEP.exists()
    assert all(s.startswith("<svg") and "<polyline" in s for s in svgs)
    assert any("continuation" in s for s in svgs)  # the completions are drawn as completions
    if not MAGENTA_SHEEP.exists():
        assert any("skipped" in t for t in text)
