"""The runs/*.json records the training notebooks write, for the tests that check their learning effects.

`make test` runs the notebooks first (scripts/run_tests.py; plain pytest collects notebooks/ before tests/), so the
records are fresh.
Run alone, a missing record is produced by executing the notebook that writes it, after the notebooks whose records
it needs. Each notebook says which records it writes and needs in its metadata "course" (scripts/run_course.py).
"""
import json
import os
import sys

import nbformat
from nbclient import NotebookClient

import helpers.tracking as tracking

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import run_course  # noqa: E402  (the notebooks' metadata "course", read once there)

NOTEBOOKS = run_course.NOTEBOOKS
# notebook name -> its path relative to notebooks/, without .ipynb (the homework's solution lives elsewhere)
_RELATIVE = {path.stem: path.stem if path.parent == NOTEBOOKS else f"../homework/solution/{path.stem}"
             for path in run_course.course_notebooks()}
WRITTEN_BY = {record: _RELATIVE[name] for record, name in run_course.WRITTEN_BY.items()}  # record -> notebook
NEEDS = {_RELATIVE[name]: tuple(meta.get("needs", ())) for name, meta in run_course.METADATA.items()}

def record(name: str) -> dict:
    """runs/<name>.json; its notebook is executed first if the record is missing, after the notebooks whose records
    it reads (so that `pytest tests/test_comparison.py` works on a fresh clone by itself)."""
    path = tracking.RUNS / f"{name}.json"
    if not path.exists():
        for needed in NEEDS.get(WRITTEN_BY[name], ()):
            record(needed)
        notebook = NOTEBOOKS / f"{WRITTEN_BY[name]}.ipynb"
        nb = nbformat.read(notebook, as_version=4)
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return json.loads(path.read_text())
