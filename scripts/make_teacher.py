"""Make the teacher's version of each notebook: every exercise solved, from teacher/solutions.py.

    python scripts/make_teacher.py            # notebooks/NN_*.ipynb -> teacher/NN_*.ipynb
    python scripts/make_teacher.py --check    # exit 1 if a teacher notebook is not what the notebooks give

An exercise is a code cell whose function ends in `raise NotImplementedError("YOUR CODE HERE")`; the function (from
its `def` line to that `raise`) is replaced by the solution of the same name and signature. Outputs are dropped
(run a teacher notebook to see every check print "correct!"), and the title says which version this is.
"""

import argparse
import functools
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TEACHER = ROOT / "teacher"
PLACEHOLDER = 'raise NotImplementedError("YOUR CODE HERE")'
# from a top-level `def` to its placeholder, with no other top-level `def` in between (a helper defined before the
# exercise in the same cell stays as it is)
EXERCISE = re.compile(r"^def (\w+)\((?:(?!^def ).)*?^    " + re.escape(PLACEHOLDER) + r"\n?", re.M | re.S)


@functools.cache
def solutions():
    """teacher/solutions.py, loaded from its file (teacher/ is not part of the installed helpers package)."""
    spec = importlib.util.spec_from_file_location("teacher_solutions", TEACHER / "solutions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solution_source(name: str) -> str:
    """The solution's source without its @solves decorator."""
    module = solutions()
    if name not in module.NOTEBOOK:
        raise KeyError(f"no solution for exercise {name}() in teacher/solutions.py")
    lines = inspect.getsource(getattr(module, name)).splitlines()
    return "\n".join(line for line in lines if not line.startswith("@solves(")) + "\n"


def exercises(source: str) -> list[str]:
    """The names of the exercise functions a code cell holds."""
    return [m.group(1) for m in EXERCISE.finditer(source)]


def solved(source: str) -> str:
    def replace(match):
        name, student = match.group(1), match.group(0)
        answer = solution_source(name)
        if student.splitlines()[0] != answer.splitlines()[0]:
            raise ValueError(f"{name}: the notebook's signature {student.splitlines()[0]!r} differs from the "
                             f"solution's {answer.splitlines()[0]!r}")
        return answer
    return EXERCISE.sub(replace, source)


def teacher_notebook(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = solved(cell.source)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    title = notebook.cells[0]
    title.source = title.source.replace(f"/notebooks/{path.name}", f"/teacher/{path.name}")
    heading, _, rest = title.source.partition("\n")
    title.source = (f"{heading} · teacher's version\n\n> Every exercise solved (`teacher/solutions.py`). Made by "
                    f"`scripts/make_teacher.py` from `notebooks/{path.name}`: edit those, not this file.\n{rest}")
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a teacher notebook is out of date")
    args = parser.parse_args()
    stale = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        target = TEACHER / path.name
        text = nbformat.writes(teacher_notebook(path)) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote teacher/{target.name}")
    if stale:
        print("out of date (run python scripts/make_teacher.py):", ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
