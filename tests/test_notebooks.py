"""Every notebook runs top to bottom (tiny settings) and is committed without outputs."""
import glob
import json
import os

import pytest

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_stored_without_outputs(path):
  with open(path, encoding="utf-8") as f:
    notebook = json.load(f)
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      assert not cell.get("outputs") and cell.get("execution_count") is None, \
          f"{os.path.basename(path)} has outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, python_env, tmp_path, shakespeare_dir):
  import nbformat  # pylint: disable=g-import-not-at-top
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  notebook = nbformat.read(path, as_version=4)
  env_backup = dict(os.environ)
  os.environ.update(python_env)
  os.environ.update({"TFF_RESEARCH_TINY": "1", "TFF_RESEARCH_DATA_DIR": shakespeare_dir,
                     "TFF_RESEARCH_OUTPUT_DIR": str(tmp_path)})
  try:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(env_backup)
