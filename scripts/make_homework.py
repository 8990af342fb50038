"""Make the student's homework notebook from the teacher's solution, so the two never drift apart.

    python scripts/make_homework.py            # homework/solution/dpo_orpo_solution.ipynb -> homework/dpo_orpo.ipynb
    python scripts/make_homework.py --check    # exit 1 if homework/dpo_orpo.ipynb is not what the solution gives

In the solution, a code region

    ### BEGIN SOLUTION
    ...the teacher's code...
    ### STUDENT
    # ...the placeholder the student starts from, commented out...
    ### END SOLUTION

becomes "# YOUR CODE HERE" plus the uncommented placeholder, and a markdown cell that starts with <!-- ANSWER -->
(a model answer) becomes "*YOUR ANSWER HERE*". Outputs are dropped.
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "homework" / "solution" / "dpo_orpo_solution.ipynb"
STUDENT = ROOT / "homework" / "dpo_orpo.ipynb"
BEGIN, STUDENT_PART, END, ANSWER = "### BEGIN SOLUTION", "### STUDENT", "### END SOLUTION", "<!-- ANSWER -->"
TEACHER_ONLY = " · teacher's solution"


def student_code(source: str) -> str:
    """Replace every solution region of one code cell by its placeholder."""
    out, state, indent = [], "code", ""
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            state, indent = "solution", line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
        elif marker == STUDENT_PART:
            state = "placeholder"
        elif marker == END:
            state = "code"
        elif state == "placeholder":
            out.append(re.sub(r"^(\s*)# ?", r"\1", line, count=1))
        elif state == "code":
            out.append(line)
    if state != "code":
        raise ValueError(f"unclosed {BEGIN} in a cell starting {source[:60]!r}")
    return "\n".join(out)


def student_notebook(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    notebook = nbformat.from_dict(solution)  # a copy
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = student_code(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif cell.source.startswith(ANSWER):
            cell.source = f"{ANSWER}\n*YOUR ANSWER HERE*"
        cell.source = cell.source.replace(TEACHER_ONLY, "")
    notebook.metadata.pop("course", None)  # what the solution records, for the course runner (scripts/run_course.py)
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the student notebook is up to date")
    args = parser.parse_args()
    made = nbformat.writes(student_notebook(nbformat.read(SOLUTION, as_version=4)))
    if args.check:
        if not STUDENT.exists() or STUDENT.read_text() != made:
            print(f"{STUDENT.relative_to(ROOT)} is out of date: run python scripts/make_homework.py")
            return 1
        print(f"{STUDENT.relative_to(ROOT)} is up to date")
        return 0
    STUDENT.write_text(made)
    print(f"wrote {STUDENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
