"""Copy the outputs of `# NBVAL_CHECK_OUTPUT` cells from executed copies into the source notebooks.

    python scripts/run_course.py 01 && python scripts/refresh_checked_outputs.py

nbval (`pytest --nbval-lax`) compares only those cells, so the source notebooks keep just their outputs and
nothing else: no progress bars, no timings, no plots that differ from machine to machine.
"""

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MARK = "# NBVAL_CHECK_OUTPUT"


def refresh(source: Path, executed: Path) -> int:
    nb, done = nbformat.read(source, as_version=4), nbformat.read(executed, as_version=4)
    executed_cells = {c.id: c for c in done.cells if c.cell_type == "code"}
    copied = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if MARK in cell.source and cell.id in executed_cells:
            # nbval treats a cell with outputs but no execution_count as "unrun" and fails it
            cell.outputs = executed_cells[cell.id].outputs
            cell.execution_count = executed_cells[cell.id].execution_count
            copied += 1
        else:
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, source)
    return copied


if __name__ == "__main__":
    for executed in sorted((ROOT / "runs" / "executed").glob("*.ipynb")):
        source = ROOT / "notebooks" / executed.name
        if source.exists():
            print(f"{source.name}: {refresh(source, executed)} checked cells refreshed")
