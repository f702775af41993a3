"""notebooks/quickstart.ipynb runs headless on CPU (nbclient, a real ipykernel), trimmed through its env vars.

It runs from this checkout, so its install cell finds aya_jax importable and installs nothing; the training
cell is the README's command with a few steps of the tiny test model.
"""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"

nbformat = pytest.importorskip("nbformat", reason="needs the [test] extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="needs the [test] extra (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="needs the [test] extra (nbformat, nbclient, ipykernel)")

# As in tests/jobs/test_sft.py: the quickstart shrunk.
TRIM = " ".join(
    [
        "--config.model.overrides.num_layers=2",
        "--config.data.seq_len=64",
        "--config.data.vocab.size=2048",
        "--config.train.log_every=1",
        "--config.train.eval_batches=0",
        "--config.checkpoint.every=1000",
        "--config.metrics.tensorboard=False",
        "--config.metrics.peak_flops_per_device=1e12",
    ]
)


def test_notebook_is_valid_and_has_no_stored_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_notebook_trains_and_shows_the_loss_curve(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    # The kernel (and the training subprocess it starts) inherit these; conftest has set JAX_PLATFORMS=cpu.
    monkeypatch.setenv("AYA_NOTEBOOK_STEPS", "4")
    monkeypatch.setenv("AYA_NOTEBOOK_ARGS", TRIM)
    monkeypatch.setenv("AYA_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("AYA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "TPU: False" in text
    assert "SFT finished at step 4" in text
    assert "4 steps logged; loss" in text
    images = [out for out in outputs if out.output_type == "display_data" and "image/png" in out.data]
    assert len(images) == 1 and len(images[0].data["image/png"]) > 1000
    assert (workdir / "loss_curve.png").exists() and (workdir / "checkpoints" / "4").is_dir()
