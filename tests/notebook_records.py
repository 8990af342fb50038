"""The runs/*.json records the training notebooks write, for the tests that check their learning effects.

`make test` runs the notebooks first (pytest collects notebooks/ before tests/), so the records are fresh.
Run alone, a missing record is produced by executing the notebook that writes it, after the notebooks whose records
it needs. Each notebook says which records it writes and needs in its metadata "course" (scripts/run_course.py).
"""
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import helpers.tracking as tracking

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HOMEWORK_SOLUTION = NOTEBOOKS.parent / "homework" / "solution" / "dpo_orpo_solution.ipynb"
WRITTEN_BY, NEEDS = {}, {}  # record -> notebook (relative to notebooks/); notebook -> the records it reads
for _path in [*sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), HOMEWORK_SOLUTION]:
    _name = _path.stem if _path.parent == NOTEBOOKS else f"../homework/solution/{_path.stem}"
    _course = nbformat.read(_path, as_version=4).metadata.get("course", {})  # see scripts/run_course.py
    WRITTEN_BY |= {record: _name for record in _course.get("records", [])}
    NEEDS[_name] = tuple(_course.get("needs", ()))


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
