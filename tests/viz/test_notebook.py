"""The analysis notebook: committed without outputs, and runs top to bottom on the tiny model."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "experiments" / "notebooks" / "attributions.ipynb"


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
    parameters = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and "SMALL" in parameters[0].source


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> list[dict]:
    """Every output of the notebook executed with ``TOKENSHAPE_NOTEBOOK_SMALL=1``."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOKENSHAPE_NOTEBOOK_SMALL", "1")
        patch.delenv("TOKENSHAPE_STUDY_DIR", raising=False)
        patch.delenv("MPLBACKEND", raising=False)
        client = NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def _html(outputs: list[dict]) -> list[str]:
    return [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]


def test_notebook_runs_without_errors_on_the_tiny_model(outputs):
    assert not [o for o in outputs if o["output_type"] == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "tiny random BERT with the MiniLM tokenizer" in printed


def test_notebook_shows_heatmaps_with_legends_and_the_comparison(outputs):
    views = [h for h in _html(outputs) if 'class="ts-view"' in h]
    assert len(views) == 3  # the batch, the side-by-side comparison, the shaped rewards
    assert all('class="ts-legend"' in view for view in views)
    (compare,) = [view for view in views if 'class="ts-compare"' in view]
    methods = re.findall(r'class="ts-method" data-method="([^"]+)"', compare)
    assert methods == ["exact", "kernel_shap", "lime", "occlusion", "attention"]
    (shaped,) = [view for view in views if "shaped per-token reward" in view]
    assert shaped.count('class="ts-legend"') == 2


def test_notebook_plots_agreement_heatmap_and_study(outputs):
    images = [
        base64.b64decode(o["data"]["image/png"])
        for o in outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 3
    assert all(image.startswith(b"\x89PNG") and len(image) > 10_000 for image in images)
    tables = [h for h in _html(outputs) if "<table" in h]
    assert len(tables) == 1 and "w_sparse" in tables[0] and "complete" in tables[0]
