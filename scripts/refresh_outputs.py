"""Copy the outputs of an executed run into the committed notebooks, cleaned for reading on GitHub or in Colab.

    make bench                             # runs every notebook and the homework solution -> runs/executed/
    python scripts/refresh_outputs.py      # (make bench calls it) copies their outputs into the notebooks

Only a cell whose source is unchanged since the run gets outputs (matched by cell id); any other cell is left empty
and named, so a stale output never sits under new code. Each output is cleaned first:
- stderr is dropped (warnings, progress bars: they differ from machine to machine and say nothing about the lesson);
- widgets and HTML progress bars are dropped (GitHub cannot show them; of the Trainer's live display the table of
  logged losses stays), and so are the nbclient timings in the cell metadata;
- stdout pieces are merged and carriage returns resolved (a line shows what the terminal would show);
- paths inside this repository are written relative to it; a printed line, or any other output, that still names
  a machine path or an absolute timestamp is dropped and reported.
An executed copy that stopped at an error, or a run in another profile than cpu, is refused (the committed outputs
are the cpu profile's, the ones nbval compares). The student homework (homework/dpo_orpo.ipynb) is never written: it
is made from the solution without outputs.
"""

import json
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path(os.environ.get("COURSE_RUNS_DIR", ROOT / "runs"))  # as scripts/run_course.py writes them
EXECUTED = RUNS / "executed"
SOURCES = [ROOT / "notebooks", ROOT / "homework" / "solution"]
WIDGET = "application/vnd.jupyter.widget-view+json"
MACHINE_PATH = re.compile(r"/(root|home|work|tmp|Users|content/drive)/")  # tests/test_hygiene.py forbids it too
# 2026-12-05 21:07 or 2026-12-05T21:07:00, and W&B's run folders' 20261205_210700
TIMESTAMP = re.compile(r"\b20\d\d-[01]\d-[0-3]\d[ T][0-2]\d:[0-5]\d|\b20\d\d[01]\d[0-3]\d_[0-2]\d[0-5]\d[0-5]\d\b")


def resolve_carriage_returns(text: str) -> str:
    """What a terminal shows: on each line only the text after its last carriage return (a line's own trailing
    carriage return, as in "\\r\\n", rewrites nothing)."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def relative_paths(text: str, root: Path = ROOT) -> str:
    return text.replace(f"{root}/", "").replace(str(root), ".")


def output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return "\n".join(value for key, value in output.get("data", {}).items()  # a figure's base64 is no text
                     if isinstance(value, str) and not key.startswith("image/"))


def clean_outputs(outputs: list, root: Path = ROOT) -> tuple[list, list[str]]:
    """(the outputs worth committing, a line per output dropped for a machine path or a timestamp)."""
    kept, dropped = [], []
    for output in outputs:
        if output.output_type == "stream":
            if output.name != "stdout":
                continue
            if kept and kept[-1].output_type == "stream":  # one stdout block, as a reader sees it
                kept[-1].text += output.text
                continue
            output = nbformat.v4.new_output("stream", name="stdout", text=output.text)
        elif output.output_type in ("display_data", "execute_result"):
            data = output.get("data", {})
            if WIDGET in data:
                continue
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            if "<progress" in html:  # the Trainer's live display: keep its table of logged losses, if it has one
                table = html[html.find("<table"):] if "<table" in html else ""
                if not table:
                    continue
                output.data["text/html"] = table
        kept.append(output)
    clean = []
    for output in kept:
        if output.output_type == "stream":  # printed lines: drop just the ones that name a machine or a time
            lines = relative_paths(resolve_carriage_returns(output.text), root).splitlines(keepends=True)
            bad = [line for line in lines if MACHINE_PATH.search(line) or TIMESTAMP.search(line)]
            dropped += [f"printed line {line.strip()!r}" for line in bad]
            output.text = "".join(line for line in lines if line not in bad)
            if output.text:
                clean.append(output)
            continue
        if "data" in output:
            for key, value in output.data.items():
                if isinstance(value, str) and not key.startswith("image/"):
                    output.data[key] = relative_paths(value, root)
        text = output_text(output)
        found = MACHINE_PATH.search(text) or TIMESTAMP.search(text)
        if found:
            dropped.append(f"{output.output_type} with {found.group(0)!r}")
            continue
        clean.append(output)
    return clean, dropped


def refresh(source: Path, executed: Path, root: Path = ROOT) -> dict:
    """Write the cleaned outputs of `executed` into `source`. Returns {"copied": n, "stale": [...], "dropped": [...]}."""
    nb, done = nbformat.read(source, as_version=4), nbformat.read(executed, as_version=4)
    ran = {cell.id: cell for cell in done.cells if cell.cell_type == "code"}
    unfinished = [c.id for c in done.cells if c.cell_type == "code" and c.source.strip() and
                  (c.execution_count is None or any(o.output_type == "error" for o in c.outputs))]
    if unfinished:  # a run that stopped at an error: its copy would blank every cell after it
        raise ValueError(f"{executed.name} did not run to the end (cell {unfinished[0]} failed or never ran): run "
                         "it again before refreshing its outputs")
    report = {"copied": 0, "stale": [], "dropped": []}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        twin = ran.get(cell.id)
        cell.outputs, cell.execution_count = [], None
        if twin is None or twin.source != cell.source:
            if cell.source.strip():
                report["stale"].append(cell.id)
            continue
        outputs, dropped = clean_outputs(twin.outputs, root)
        report["dropped"] += [f"cell {cell.id}: {line}" for line in dropped]
        if "# NBVAL_CHECK_OUTPUT" in cell.source and any(o.get("name") == "stderr" for o in twin.outputs):
            report["dropped"].append(f"cell {cell.id}: stderr of a checked cell (nbval will see it on every run: "
                                     "silence the warning in the cell)")
        if outputs:
            cell.outputs = outputs
            report["copied"] += 1
        # nbval skips a cell with no execution_count; every cell that ran keeps its count
        cell.execution_count = twin.execution_count
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, source)
    return report


def main() -> int:
    runs = sorted(EXECUTED.glob("*.ipynb"))
    if not runs:
        print("runs/executed/ is empty: run `make bench` (or python scripts/run_course.py) first")
        return 1
    timing = RUNS / "course_timing.json"
    profile = json.loads(timing.read_text()).get("profile") if timing.exists() else None
    if profile != "cpu":  # the committed outputs are the cpu profile's, the one nbval compares
        print(f"runs/executed/ holds a {profile} run (runs/course_timing.json): the committed outputs are the cpu "
              "profile's; run `make bench` (COURSE_PROFILE=cpu)")
        return 1
    for executed in runs:
        sources = [folder / executed.name for folder in SOURCES if (folder / executed.name).exists()]
        if not sources:
            continue
        try:
            report = refresh(sources[0], executed)
        except ValueError as error:
            print(f"{sources[0].relative_to(ROOT)}: not refreshed: {error}")
            continue
        print(f"{sources[0].relative_to(ROOT)}: {report['copied']} cells with outputs")
        if report["stale"]:
            print(f"  not copied (the cell changed since the run; run the notebook again): {report['stale']}")
        for line in report["dropped"]:
            print(f"  dropped: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
