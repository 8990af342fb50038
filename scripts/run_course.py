"""Run every notebook (cpu profile unless COURSE_PROFILE says otherwise) and time each one.

    python scripts/run_course.py                 # executed copies -> runs/executed/, timings -> runs/course_timing.json
    python scripts/run_course.py --workers 2     # two notebooks at a time, one thread each (CPU; not with --record)
    python scripts/run_course.py 01              # only notebooks whose name starts with 01 ("dpo" for the homework
                                                 # solution, which runs after 09)
    python scripts/run_course.py --record        # also write benchmarks/<profile>.json and the README's table
    python scripts/run_course.py --table         # only rewrite the README's tables from benchmarks/*.json
    python scripts/run_course.py --results       # only store runs/*.json's headlines in benchmarks/cpu.json (+ README)

By default the notebooks run one after another, each with every core: the course's numbers then reproduce the
committed ones bit for bit on the same kind of CPU (two full runs on the Xeon: every record the same), and --record
(the benchmark) times what a notebook costs you when you run it. --workers 2 runs two at a time on the CPU, one
thread each, each after the notebooks whose records it reads (`run_side_by_side`, the schedule `make test` uses):
on 2 cores of the Xeon the course and homework took 30.0 min instead of 33.5, because a notebook keeps one core busy
part of its time, but one thread rounds differently from two, and where a run samples (notebook 08's GRPO control)
the difference grows into other answers and other numbers, within the tests' margins.
The source notebooks are never written here: scripts/refresh_outputs.py copies the executed copies' outputs into them
(make bench runs both).
Peak memory is the largest resident memory of the kernel and its children, sampled every 0.2 s. While a notebook
runs, the cell being run and the time so far are shown (on a terminal in one updating line; in a log, the cells that
took 10 s or more).

The roofline: each training cell's record (runs/*.json) counts its model FLOPs (helpers.tracking.FlopCounter) and
divides the achieved FLOP/s by this machine's matrix-product peak in the precision it ran, measured at the start of
the same run (runs/machine.json, deleted first so that it is fresh; a partial --record writes the benchmark's own
peak there instead, so that one peak serves every row). The benchmark keeps them per training cell.
"""

import argparse
import json
import re
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUNS = Path(os.environ.get("COURSE_RUNS_DIR", ROOT / "runs"))  # as helpers.tracking reads it
BENCHMARKS = ROOT / "benchmarks"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- notebook-table:start -->", "<!-- notebook-table:end -->"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"

HOMEWORK_SOLUTION = ROOT / "homework" / "solution" / "dpo_orpo_solution.ipynb"
DEFAULT_PROFILES = "cpu, t4, l4, large"


def course_notebooks() -> list[Path]:
    """The notebooks the course runs, in order: notebooks/NN_*.ipynb, then the homework's solution."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) + [HOMEWORK_SOLUTION]


def course_metadata(path: Path) -> dict:
    """What a notebook says about itself in its metadata "course" (edit it in the notebook's JSON, or in Jupyter:
    Edit > Notebook metadata): "topic" (the README's table), "records" (the runs/*.json it writes), "needs" (other
    notebooks' records, and the adapters saved beside them, that it reads), "headlines" (its rows in the README's
    Results: [record, [keys to a helpers.stats interval in it], what it measures, digits, optionally what the
    interval must read: "rose", "fell", "> 0" or "< 0"]), "profiles" (optional, default DEFAULT_PROFILES)."""
    return json.loads(path.read_text())["metadata"].get("course", {})


METADATA = {path.stem: course_metadata(path) for path in course_notebooks()}  # each notebook read once
WRITTEN_BY = {record: name for name, meta in METADATA.items() for record in meta.get("records", [])}  # record -> nb
# What the README's table says about each notebook besides the measured numbers: {notebook: (topic, profiles)}.
CATALOGUE = {name: (meta.get("topic", ""), meta.get("profiles", DEFAULT_PROFILES)) for name, meta in METADATA.items()}


def record_prefix(notebook: str) -> str:
    """The prefix of the records a notebook writes: runs/01_*.json for 01_..., runs/homework_*.json for the homework."""
    return "homework" if notebook == HOMEWORK_SOLUTION.stem else notebook[:2]


def course_order(notebook: str) -> tuple:
    """Sort key: the notebooks by number, then the homework solution (the order the course runs them in)."""
    return notebook == HOMEWORK_SOLUTION.stem, notebook


def row_label(notebook: str) -> str:
    """The table's first column: the notebook's number, "hw" for the homework solution."""
    return "hw" if notebook == HOMEWORK_SOLUTION.stem else notebook[:2]


def notebook_link(notebook: str) -> str:
    path = HOMEWORK_SOLUTION.relative_to(ROOT) if notebook == HOMEWORK_SOLUTION.stem else f"notebooks/{notebook}.ipynb"
    return f"[{notebook}]({path})"


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class Progress:
    """Which cell of a notebook is running and the time so far. On a terminal: one line, rewritten in place as the
    cells run. In a log (CI, `make course > log`): one line per cell that took `slow` seconds or more, so a log shows
    where the time went without a line per cell. Passed to nbclient as its on_cell_execute (the cell is sent to the
    kernel) and on_cell_executed (its reply came) hooks."""

    def __init__(self, notebook, stream=None, slow: float = 10.0):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.slow = slow
        self.code_cells = sum(cell.cell_type == "code" and bool(cell.source.strip()) for cell in notebook.cells)
        self.done = 0
        self.start = self.cell_start = time.perf_counter()

    @staticmethod
    def label(cell) -> str:
        """The first line of a cell that is code, not a comment or a magic: what a reader recognises it by."""
        lines = [line.strip() for line in cell.source.splitlines()]
        code = [line for line in lines if line and not line.startswith(("#", "%", "!"))]
        text = code[0] if code else (lines[0] if lines else "")
        return text if len(text) <= 60 else text[:57] + "..."

    def elapsed(self) -> str:
        seconds = int(time.perf_counter() - self.start)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def on_cell_execute(self, cell, cell_index):
        self.cell_start = time.perf_counter()
        if self.tty:
            line = f"  [{self.elapsed()}] cell {self.done + 1}/{self.code_cells}: {self.label(cell)}"
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def on_cell_executed(self, cell, cell_index, execute_reply=None):
        self.done += 1
        took = time.perf_counter() - self.cell_start
        if not self.tty and took >= self.slow:
            self.stream.write(f"  [{self.elapsed()}] cell {self.done}/{self.code_cells} took {took:.0f} s: "
                              f"{self.label(cell)}\n")
            self.stream.flush()

    def close(self):
        """Clear the terminal's progress line, whether the notebook finished or stopped at an error."""
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_notebook(path: Path, timeout: int) -> dict:
    notebook = nbformat.read(path, as_version=4)
    progress = Progress(notebook)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_execute=progress.on_cell_execute, on_cell_executed=progress.on_cell_executed)
    me = psutil.Process()
    peak = {"mb": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak["mb"] = max(peak["mb"], tree_rss_mb(me))

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    error = None
    detail = None
    try:
        client.execute()
    except Exception as exc:  # the executed copy still shows the failing cell
        # a failing cell (nbclient's CellExecutionError) names its own exception; its text has the cell and traceback
        error = (f"{exc.ename}: {exc.evalue}" if hasattr(exc, "ename")
                 else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        detail = str(exc)
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        progress.close()
    if detail:
        print(detail, flush=True)
    executed = RUNS / "executed" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, executed)
    return {"notebook": path.stem, "seconds": round(seconds, 1), "peak_memory_mb": round(peak["mb"]),
            "ok": error is None, "error": error}


def remaining(todo: dict[str, dict]) -> dict[str, float]:
    """{job: its seconds plus those of the longest chain of jobs that wait on it}: the time from its start to the
    end at the least. The job on the longest chain starts first (05, which 08 and then 09 wait for)."""
    waiting = {job: [other for other, spec in todo.items() if job in spec["needs"]] for job in todo}
    memo, visiting = {}, set()

    def chain(job):
        if job in visiting:
            raise ValueError(f"{job} waits, through its needs, for itself: {sorted(visiting)}")
        if job not in memo:
            visiting.add(job)
            memo[job] = todo[job]["seconds"] + max((chain(other) for other in waiting[job]), default=0)
            visiting.discard(job)
        return memo[job]

    return {job: chain(job) for job in todo}


def schedule(todo: dict[str, dict], workers: int, start, poll) -> dict[str, str]:
    """Run every job of `todo` with at most `workers` at once: a job starts when all its needs have passed, the one
    with the longest chain of jobs behind it first (`remaining`). start(job, alone) launches one, alone=True when
    no other job is running or left to start (it may take every core); poll() returns {job: passed?} for the jobs
    that ended since. Returns {job: "passed" | "FAILED" | "not run (needs X)"} for every job."""
    if workers < 1:
        raise ValueError(f"workers={workers}: run at least one job at a time")
    result, running, priority = {}, set(), remaining(todo)
    while len(result) < len(todo):
        for job, spec in todo.items():  # a job whose needs failed, or were not run, is not run
            failed = sorted(need for need in spec["needs"] if result.get(need, "passed") != "passed")
            if job not in result and job not in running and failed:
                result[job] = f"not run (needs {', '.join(failed)})"
        ready = sorted((job for job, spec in todo.items() if job not in result and job not in running
                        and all(result.get(need) == "passed" for need in spec["needs"])),
                       key=lambda job: -priority[job])
        for job in ready[:workers - len(running)]:
            start(job, alone=not running and len(result) == len(todo) - 1)
            running.add(job)
        if not running:
            break
        for job, passed in poll().items():
            running.discard(job)
            result[job] = "passed" if passed else "FAILED"
    for job, spec in todo.items():  # needs no job of `todo` can meet: never silently left out
        result.setdefault(job, f"not run (needs {', '.join(sorted(set(spec['needs']) - set(todo)))})")
    return result


def run_side_by_side(notebooks: list[Path], workers: int, timeout: int) -> list[dict]:
    """Run the notebooks `workers` at a time, each in a process of its own (`--one`) with cores // workers threads
    (every core for the last one left), a notebook only after those whose records it reads (its metadata "needs")
    have passed, the one with the longest chain of notebooks waiting behind it first (scripts/run_tests.py runs the
    tests the same way). Each one's output goes to runs/course-logs/<notebook>.log. Returns their results in course
    order; a notebook whose needs failed is reported as not run."""
    chosen = {path.stem: path for path in notebooks}
    bench = read_benchmark("cpu")
    todo = {name: {"needs": {WRITTEN_BY[record] for record in METADATA[name].get("needs", [])} & set(chosen),
                   "seconds": bench.get(name, {}).get("seconds", 300)} for name in chosen}
    logs = RUNS / "course-logs"
    logs.mkdir(parents=True, exist_ok=True)
    cores, began, processes, results, shown = os.cpu_count() or 2, time.perf_counter(), {}, {}, {}

    def start(name, alone):
        threads = cores if alone else max(1, cores // workers)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
        log = open(logs / f"{name}.log", "w")
        command = [sys.executable, __file__, "--one", str(chosen[name]), "--timeout", str(timeout)]
        processes[name] = (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        shown[name] = 0
        print(f"{time.perf_counter() - began:6.0f} s  start {name} ({threads} thread{'s' * (threads > 1)})",
              flush=True)

    def relay():
        """Each running notebook's slow cells as its log gets them (Progress's lines), named by the notebook."""
        for name in processes:
            with open(logs / f"{name}.log", "rb") as log:
                log.seek(shown[name])
                text = log.read()
            complete = text[:text.rfind(b"\n") + 1]
            shown[name] += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if re.match(r"  \[\d+:\d\d\] cell ", line):
                    print(f"{time.perf_counter() - began:6.0f} s  {name}{line[1:]}", flush=True)

    def poll():
        while not any(process.poll() is not None for process, _ in processes.values()):
            relay()
            time.sleep(1)
        relay()
        ended = {}
        for name in [n for n, (process, _) in processes.items() if process.poll() is not None]:
            process, log = processes.pop(name)
            log.close()
            result_file = logs / f"{name}.json"
            result = json.loads(result_file.read_text()) if result_file.exists() else {
                "notebook": name, "seconds": None, "peak_memory_mb": None, "ok": False,
                "error": f"the runner stopped (exit code {process.returncode}): see {log.name}"}
            results[name], ended[name] = result, result["ok"]
            status = "ok" if result["ok"] else f"FAILED ({result['error']}; the cell and traceback: {log.name})"
            print(f"{time.perf_counter() - began:6.0f} s  {name}: {status}"
                  + (f" in {result['seconds']:.0f} s, peak memory {result['peak_memory_mb']} MB"
                     if result["seconds"] is not None else ""), flush=True)
        return ended

    for name in chosen:
        (logs / f"{name}.json").unlink(missing_ok=True)
    try:
        state = schedule(todo, workers, start, poll)
    finally:  # an error here must not leave notebooks running
        for process, log in processes.values():
            process.kill()
            log.close()
    for name, what in state.items():
        if name not in results:
            print(f"        {name}: {what}", flush=True)
            results[name] = {"notebook": name, "seconds": None, "peak_memory_mb": None, "ok": False, "error": what}
    return [results[path.stem] for path in notebooks]


def run_one(path: Path, timeout: int) -> int:
    """`--one`: run one notebook in this process, print its progress, write its result (with its training cells'
    roofline) to runs/course-logs/<notebook>.json for run_side_by_side; the exit code says whether it passed."""
    result = run_notebook(path, timeout)
    result["training_cells"] = training_cells(path.stem)
    result["threads"] = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    (RUNS / "course-logs").mkdir(parents=True, exist_ok=True)
    (RUNS / "course-logs" / f"{path.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


def training_cells(notebook: str) -> list[dict]:
    """The roofline of each training record a notebook wrote (runs/<number>_*.json with a FLOP count)."""
    rows = []
    for path in sorted(RUNS.glob(f"{record_prefix(notebook)}_*.json")):
        record = json.loads(path.read_text())
        if record.get("flops"):
            rows.append({key: record.get(key) for key in ("name", "seconds", "steps", "precision", "flops",
                                                          "gflops_per_s", "peak_gflops_per_s", "peak_share")})
    return rows


def share(row: dict | None) -> str:
    """'6-14% (bfloat16)': the range of a notebook's training cells' share of the matrix-product peak."""
    cells = [c for c in (row or {}).get("training_cells", []) if c.get("peak_share") is not None]
    if not cells:
        return "—"
    low, high = min(c["peak_share"] for c in cells), max(c["peak_share"] for c in cells)
    text = f"{100 * low:.0f}%" if round(100 * low) == round(100 * high) else f"{100 * low:.0f}-{100 * high:.0f}%"
    return f"{text} ({'/'.join(sorted({c['precision'] for c in cells}))})"


def cpu_model() -> str:
    """This CPU's model name, as helpers.profiles puts it first in a machine key (imported here only when needed:
    it brings torch)."""
    from helpers.profiles import cpu_model as model_name

    return model_name()


def keep_recorded_peak(profile: str) -> dict | None:
    """Before a partial --record: runs/machine.json := the peak that benchmarks/<profile>.json was measured against,
    so that the re-run notebooks' shares use the same peak as the rest of the benchmark, not whatever an earlier run
    (perhaps one that shared the cores with another job) left in runs/machine.json. On another machine (another key)
    the notebooks measure afresh. Returns what it wrote, None without a recorded peak."""
    recorded = BENCHMARKS / f"{profile}.json"
    bench = json.loads(recorded.read_text()) if recorded.exists() else {}
    if not bench.get("cpu") or not bench.get("matmul_gflops"):
        (RUNS / "machine.json").unlink(missing_ok=True)  # nothing to keep: measure afresh, never an old file
        return None
    here = cpu_model()
    if bench["cpu"].split(" | ")[0] != here:
        print(f"warning: {recorded.name} was measured on {bench['cpu'].split(' | ')[0]}, this is {here}: the notebooks "
              "will measure this machine's peak, and the benchmark would mix two machines' rows. On a new machine run "
              "the whole course with --record.", flush=True)
    machine = {"machine": bench["cpu"], "gflops": bench["matmul_gflops"],
               "matmul": f"kept from {recorded.relative_to(ROOT)} (its full run)"}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    return machine


def read_benchmark(profile: str) -> dict:
    """benchmarks/<profile>.json as {notebook: row}; a row with "estimate": true was not measured."""
    path = BENCHMARKS / f"{profile}.json"
    return {r["notebook"]: r for r in json.loads(path.read_text())["notebooks"]} if path.exists() else {}


def cell(row: dict | None, key: str) -> str:
    """'2.1 min' / '3.4 GB' when measured, '~20 min (est.)' for an estimate, '—' when unknown."""
    if not row or row.get(key) is None:
        return "—"
    text = f"{row[key] / 60:.1f} min" if key == "seconds" else f"{row[key] / 1024:.1f} GB"
    return f"~{text.replace('.0 ', ' ')} (est.)" if row.get("estimate") else text


def readme_table() -> str:
    """The README's notebook table, from benchmarks/cpu.json (measured) and benchmarks/t4.json (measured or not)."""
    cpu, t4 = read_benchmark("cpu"), read_benchmark("t4")
    rows = ["| # | notebook | topic | profiles | cpu time | cpu peak memory | cpu share of peak | T4 time | "
            "T4 peak memory |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in sorted(cpu, key=course_order):
        topic, profiles = CATALOGUE.get(name, ("", ""))
        rows.append(f"| {row_label(name)} | {notebook_link(name)} | {topic} | {profiles} | {cell(cpu[name], 'seconds')} | "
                    f"{cell(cpu[name], 'peak_memory_mb')} | {share(cpu[name])} | {cell(t4.get(name), 'seconds')} | "
                    f"{cell(t4.get(name), 'peak_memory_mb')} |")
    bench = json.loads((BENCHMARKS / "cpu.json").read_text())
    cores, peaks = bench["cores"], bench.get("matmul_gflops")
    t4_note = ("measured by `make bench COURSE_PROFILE=t4`" if t4 and not any(r.get("estimate") for r in t4.values())
               else "cells marked (est.) are estimates, not measurements: no GPU has run the course yet "
                    "(benchmarks/t4.json and l4.json say how they were made)")
    peak_note = (f" Share of peak: each training cell's model FLOPs per second over this machine's measured "
                 f"matrix-product peak in the precision it ran (float32 {peaks['float32']:.0f}, bfloat16 "
                 f"{peaks['bfloat16']:.0f} GFLOP/s), lowest-highest cell; benchmarks/cpu.json has every cell."
                 if peaks else "")
    return ("\n".join(rows) + f"\n\ncpu: measured by `make bench` ({cores} cores, {bench.get('precision', 'float32')})."
            f"{peak_note} T4: {t4_note}.")


def minutes(text: str) -> float:
    """'~3 min', '~1.5 min (estimate)', '~2 × 60 min (estimate)', '2.6 min' -> minutes (the product for 'a × b')."""
    found = re.match(r"~?\s*(?:(\d+(?:\.\d+)?)\s*×\s*)?(\d+(?:\.\d+)?)\s*min", text.strip())
    if not found:
        raise ValueError(f"no time in {text!r}: write it as '~N min'")
    return float(found.group(1) or 1) * float(found.group(2))


def stated_time(path: Path, profile: str) -> tuple[float, str]:
    """(minutes, row) of a profile in a notebook's "Hardware and time" table; its last column is the time."""
    cells = json.loads(path.read_text())["cells"]
    tables = ["".join(c["source"]) for c in cells
              if c["cell_type"] == "markdown" and "**Hardware and time**" in "".join(c["source"])]
    rows = [line for table in tables for line in table.splitlines() if line.startswith(f"| `{profile}` |")]
    if not rows:
        raise ValueError(f"{path.name}: no `{profile}` row in its **Hardware and time** table (the time goes last)")
    return minutes(rows[0].rstrip(" |").rsplit("|", 1)[-1]), rows[0]


def sync_gpu_estimates() -> None:
    """benchmarks/t4.json and l4.json: a row per notebook; where no GPU has measured it ("estimate": true), the
    time its "Hardware and time" table states (a new notebook gets its row from there)."""
    for profile in ("t4", "l4"):
        path = BENCHMARKS / f"{profile}.json"
        bench = json.loads(path.read_text())
        rows = {row["notebook"]: row for row in bench["notebooks"]}
        for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
            row = rows.setdefault(notebook.stem, {"notebook": notebook.stem, "seconds": None, "peak_memory_mb": None,
                                                  "ok": None, "estimate": True})
            if row.get("estimate"):
                row["seconds"] = round(stated_time(notebook, profile)[0] * 60)
        bench["notebooks"] = [rows[name] for name in sorted(rows, key=course_order)]
        text = json.dumps(bench, indent=2) + "\n"
        if text != path.read_text():
            path.write_text(text)


WORKSHOP = ROOT / "WORKSHOP.md"


def write_workshop_times() -> None:
    """WORKSHOP.md's "Time per notebook and profile": its `cpu` column is the last make bench's time per notebook."""
    cpu = read_benchmark("cpu")
    head, sep, rest = WORKSHOP.read_text().partition("## Time per notebook and profile")

    def measured(match):
        notebook = next(name for name in cpu if name.startswith(match.group(1)))
        return f"{match.group(0).split('|')[0]}| {match.group(1)}{match.group(2)}| {cpu[notebook]['seconds'] / 60:.1f} min |"

    rest = re.sub(r"^\| (\d\d)( [^|]*)\| [^|]* \|", measured, rest, flags=re.M)
    if sep and head + sep + rest != WORKSHOP.read_text():
        WORKSHOP.write_text(head + sep + rest)


def write_readme_table() -> None:
    sync_gpu_estimates()
    write_workshop_times()
    text = README.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + readme_table() + "\n" + text[end:])


# The README's results: per notebook its headline measurement, read from the record the notebook wrote (runs/), as
# its metadata "headlines" lists them: (notebook, record, keys to a helpers.stats interval in it, what it measures,
# digits). An entry with "before",
# "after" and "change" is a before/after measurement on the same prompts (helpers.stats.before_after); one with
# only "value" and "ci95" is a paired difference (a claim) and fills the change column alone.
# A headline may end with what its interval must read ("rose", "fell", "> 0", "< 0"): tests/test_benchmarks.py checks
# it on a fresh run, so a new notebook's learning effect is tested without a test of its own.
HEADLINES = [(record_prefix(name), record, tuple(keys), what, digits)
             for name, meta in METADATA.items() for record, keys, what, digits, *_ in meta.get("headlines", [])]
EXPECTED = {(record, tuple(keys)): expect[0] for meta in METADATA.values()
            for record, keys, what, digits, *expect in meta.get("headlines", []) if expect}


def headline(record: dict, keys, what: str, digits: int = 2) -> dict:
    """One results row from a record: {"what", "before", "after", "change", "n", "reads"} as text."""
    from helpers.stats import shown, verdict  # the same formatting the notebooks print

    entry = record
    for key in keys:
        if not isinstance(entry, dict) or key not in entry:
            raise KeyError(f"{record.get('name')}: no {'/'.join(keys)} in its record (available: "
                           f"{sorted(entry) if isinstance(entry, dict) else entry!r})")
        entry = entry[key]
    before_after = "change" in entry
    change = entry["change"] if before_after else entry
    # a before/after change rose or fell (helpers.stats.before_after's direction); a difference between two models
    # is above or below 0
    reads = entry["direction"] if before_after else {"holds": "> 0", "fails": "< 0"}.get(
        verdict(change["ci95"]), "within noise")
    return {"what": what, "before": shown(entry["before"], digits) if "before" in entry else "—",
            "after": shown(entry["after"], digits) if "after" in entry else "—",
            "change": shown(change, digits), "value": change["value"], "ci95": change["ci95"], "n": change["n"],
            "reads": reads}


def collect_results(runs: Path = RUNS) -> list[dict]:
    """The results rows from runs/*.json (what make bench stores in benchmarks/cpu.json)."""
    rows = []
    for notebook, name, keys, what, digits in HEADLINES:
        record = json.loads((runs / f"{name}.json").read_text())
        if record["profile"] != "cpu":
            raise ValueError(f"runs/{name}.json comes from the {record['profile']} profile; the README's results "
                             "are the cpu profile's: run make bench (COURSE_PROFILE=cpu)")
        rows.append({"notebook": notebook, "record": name, "keys": list(keys), **headline(record, keys, what, digits)})
    return rows


def results_section(bench: dict | None = None) -> str:
    """The README's results, from benchmarks/cpu.json: each notebook's headline before -> after with its 95%
    interval and n, the time and peak memory of the notebook, and notebook 09's comparison."""
    bench = bench or json.loads((BENCHMARKS / "cpu.json").read_text())
    timing = {row_label(r["notebook"]): r for r in bench["notebooks"]}
    lines = ["| # | measured on held-out data | before | after | change [95% interval] | n | reads | notebook time "
             "| peak memory |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shown_before = set()
    for row in bench["results"]:
        run = timing.get(row["notebook"])
        time_and_memory = ("| | |" if row["notebook"] in shown_before  # once per notebook
                           else f"| {cell(run, 'seconds')} | {cell(run, 'peak_memory_mb')} |")
        shown_before.add(row["notebook"])
        lines.append(f"| {row['notebook']} | {row['what']} | {row['before']} | {row['after']} | {row['change']} | "
                     f"{row['n']} | {row['reads']} {time_and_memory}")
    text = "\n".join(lines)
    comparison = bench.get("comparison")
    if comparison:
        def number(value, column):
            if value is None:
                return "—"
            return f"{value:.0f}" if column in ("training seconds", "peak memory (MB)") else f"{value:.2f}"

        text += (f"\n\nNotebook 09 compares the methods on the same {comparison['n']} held-out prompts (means; the "
                 "gold judge checks the fact, the reward model is notebook 05's; the notebook has the intervals and "
                 "the paired differences):\n\n| method | " + " | ".join(COMPARISON_COLUMNS) + " |\n| --- |"
                 + " --- |" * len(COMPARISON_COLUMNS))
        for method, values in comparison["table"].items():
            text += f"\n| {method} | " + " | ".join(number(values[c], c) for c in COMPARISON_COLUMNS) + " |"
    return (text + f"\n\nMeasured by `make bench` in the cpu profile ({bench['cores']} cores, "
            f"{bench.get('precision', 'float32')}). *reads*: the 95% interval of the change (a bootstrap over the "
            "held-out examples: people, queries, pairs or prompts) lies above 0 (rose, > 0), below 0 (fell, < 0) or "
            "around it (within noise); a row without before and after is a paired difference on the same examples. "
            "The GPU profiles train longer on larger models: their numbers differ.")


# Notebook 09's columns the README shows: quality by the gold judge, by the learned reward model and by preference,
# then the cost (its notebook has the rest, with intervals).
COMPARISON_COLUMNS = ["gold", "right fact", "reward-model score", "win rate vs start", "preference accuracy",
                      "training seconds", "peak memory (MB)"]


def comparison_means(runs: Path = RUNS) -> dict | None:
    """Notebook 09's means, {"n": prompts, "table": {method: {column: value}}}, from runs/09_comparison.json."""
    path = runs / "09_comparison.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    for method, row in record["table"].items():
        missing = [column for column in COMPARISON_COLUMNS if column not in row]
        if missing:
            raise KeyError(f"09_comparison: {method} has no {missing} (columns: {sorted(row)}): update "
                           "COMPARISON_COLUMNS")
    return {"n": record["eval_prompts"],
            "table": {method: {column: row[column] for column in COMPARISON_COLUMNS}
                      for method, row in record["table"].items()}}


def with_results(bench: dict) -> dict:
    """bench with the README's results added from runs/: the headlines and 09's comparison."""
    return {**bench, "results": collect_results(), "comparison": comparison_means()}


def write_readme_results() -> None:
    text = README.read_text()
    start, end = text.index(RESULTS_START) + len(RESULTS_START), text.index(RESULTS_END)
    README.write_text(text[:start] + "\n" + results_section() + "\n" + text[end:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("only", nargs="*", help="run only notebooks whose names start with these prefixes")
    parser.add_argument("--record", action="store_true", help="write benchmarks/<profile>.json and the README table")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--table", action="store_true", help="only rewrite the README table from benchmarks/")
    parser.add_argument("--results", action="store_true",
                        help="only store the results of the runs/*.json a full cpu run wrote in benchmarks/cpu.json "
                             "and rewrite the README")
    parser.add_argument("--workers", type=int, default=1,
                        help="notebooks at once, cores // workers threads each (default 1; --record times each alone)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # run_side_by_side's child: one notebook
    args = parser.parse_args()
    profile = os.environ.setdefault("COURSE_PROFILE", "cpu")
    if args.one:
        sys.exit(run_one(args.one, args.timeout))
    if args.record and args.workers > 1:
        parser.error("--record times each notebook alone, with every core: leave out --workers")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: run at least one notebook at a time")
    workers = args.workers
    if args.results:
        recorded = BENCHMARKS / "cpu.json"
        recorded.write_text(json.dumps(with_results(json.loads(recorded.read_text())), indent=2) + "\n")
        args.table = True
    if args.table:
        write_readme_table()
        if "results" in json.loads((BENCHMARKS / "cpu.json").read_text()):
            write_readme_results()
        return

    candidates = course_notebooks()  # the solution runs last
    notebooks = [p for p in candidates if not args.only or any(p.name.startswith(o) for o in args.only)]
    if args.record and not args.only:
        (RUNS / "machine.json").unlink(missing_ok=True)  # measure the matrix-product peak afresh in this run
    elif args.record:  # a partial re-measure keeps the full run's peak, so every share in the benchmark uses one
        keep_recorded_peak(profile)
    results, began = [], time.perf_counter()
    if workers > 1 and len(notebooks) > 1:
        print(f"running {len(notebooks)} notebooks ({profile} profile), {workers} at a time; each one's output in "
              f"{RUNS / 'course-logs'}/", flush=True)
        # the matrix-product peak (runs/machine.json, which COURSE_CPU_PRECISION=auto and the roofline read) is
        # measured now, with every core, not by two notebooks measuring at once
        measured = subprocess.run([sys.executable, "-c", "from helpers.profiles import measure_cpu_gflops as m; m()"],
                                  cwd=ROOT, capture_output=True, text=True)
        if measured.returncode:
            raise SystemExit(f"measuring the matrix-product peak failed:\n{measured.stdout}{measured.stderr}")
        results = run_side_by_side(notebooks, workers, args.timeout)
    else:
        for path in notebooks:
            print(f"running {path.name} ({profile} profile) ...", flush=True)
            result = run_notebook(path, args.timeout)
            result["training_cells"] = training_cells(path.stem)
            status = "ok" if result["ok"] else f"FAILED ({result['error']})"
            print(f"  {status} in {result['seconds']:.0f} s, peak memory {result['peak_memory_mb']} MB", flush=True)
            results.append(result)
    wall = time.perf_counter() - began

    total = sum(r["seconds"] or 0 for r in results)
    machine = json.loads((RUNS / "machine.json").read_text()) if (RUNS / "machine.json").exists() else {}
    precisions = sorted({c["precision"] for r in results for c in r["training_cells"]})
    summary = {"profile": profile, "cores": os.cpu_count(), "machine": platform.machine(),
               "cpu": machine.get("machine"), "matmul_gflops": machine.get("gflops"),
               "precision": "/".join(precisions) or None,
               "total_seconds": round(total, 1), "notebooks": results}
    if workers > 1:  # the notebooks' own seconds overlap: the run's time is the wall clock's
        summary.update(workers=workers, wall_seconds=round(wall, 1))
    RUNS.mkdir(exist_ok=True)
    (RUNS / "course_timing.json").write_text(json.dumps(summary, indent=2) + "\n")
    at_once = f", {workers} at a time ({total / 60:.1f} min of notebook time)" if workers > 1 else ""
    print(f"{len(results)} notebooks in {wall / 60:.1f} min{at_once}; executed copies in runs/executed/")

    if args.record and all(r["ok"] for r in results):
        BENCHMARKS.mkdir(exist_ok=True)
        recorded = BENCHMARKS / f"{profile}.json"
        if args.only and recorded.exists():  # re-measured a few notebooks: keep the others' earlier numbers
            fresh = {r["notebook"] for r in results}
            kept = [r for r in json.loads(recorded.read_text())["notebooks"] if r["notebook"] not in fresh]
            results = sorted(kept + results, key=lambda r: course_order(r["notebook"]))
            summary.update(notebooks=results, total_seconds=round(sum(r["seconds"] for r in results), 1))
        if profile == "cpu" and not args.only:  # the README's results: one full run's records, never a mix
            try:
                summary = with_results(summary)
            except (KeyError, OSError, ValueError) as exc:  # keep the timings; say how to add the results
                print(f"results not stored ({exc}): fix HEADLINES, then python scripts/run_course.py --results")
        elif recorded.exists():
            kept = json.loads(recorded.read_text())
            summary.update({key: kept[key] for key in ("results", "comparison") if key in kept})
        recorded.write_text(json.dumps(summary, indent=2) + "\n")
        write_readme_table()
        if "results" in summary and profile == "cpu":
            write_readme_results()
        print(f"recorded benchmarks/{profile}.json and the README's tables")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
