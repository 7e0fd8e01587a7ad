"""The Colab notebooks run top to bottom offline (a local kernel on 127.0.0.1, started and stopped
by nbclient) and show what they promise, so they cannot rot."""
import os

import pytest

from autox3d_jax.models import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _execute(name, tmp_path, **env):
  import nbclient   # the 'test' extra installs nbclient, nbformat and ipykernel
  import nbformat
  nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
  saved = dict(os.environ)
  os.environ.update({"TFDS_DATA_DIR": str(tmp_path / "data"), "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                     **env})
  try:
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(saved)
  return nb


def _outputs(nb, kind):
  return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if kind in o.get("data", {}) or (kind == "stream" and o.get("output_type") == "stream")]


@pytest.mark.slow
def test_quickstart_runs_the_tiny_demo_and_shows_the_report(tmp_path):
  nb = _execute("autox3d_quickstart.ipynb", tmp_path, AUTOX3D_NOTEBOOK_WORKDIR=str(tmp_path / "work"))
  markdown = "".join(o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown"))
  assert "AutoX3D (searched)" in markdown and "X3D-like baseline" in markdown
  assert len(_outputs(nb, "image/png")) == 2                      # the Pareto and the decisions plots
  assert (tmp_path / "work" / "report" / "results.json").exists()


@pytest.mark.slow
def test_model_zoo_notebook_shows_the_family_timings_and_a_clip(tmp_path):
  nb = _execute("x3d_model_zoo.ipynb", tmp_path, AUTOX3D_NOTEBOOK_CLIP="4,64")
  table = "".join(o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown"))
  for name in ("X3D-XS", "X3D-S", "X3D-M", "X3D-L", "X3D-XL"):
    assert f"| {name} |" in table
  text = "".join("".join(o.get("text", "")) for o in _outputs(nb, "stream"))
  assert text.count(" ms (cpu)") == len(zoo.names()) and "-> logits (1, 10)" in text
  assert len(_outputs(nb, "image/png")) == 1                      # the clip's frames
