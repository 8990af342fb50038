"""Run every notebook in order (cpu profile unless COURSE_PROFILE says otherwise) and time each one.

    python scripts/run_course.py                 # executed copies -> runs/executed/, timings -> runs/course_timing.json
    python scripts/run_course.py 01              # only notebooks whose name starts with 01
    python scripts/run_course.py --record        # also write benchmarks/<profile>.json and the README's table
    python scripts/run_course.py --table         # only rewrite the README's table from benchmarks/*.json

The source notebooks are never written: they keep only the outputs nbval compares (# NBVAL_CHECK_OUTPUT cells).
Peak memory is the largest resident memory of the kernel and its children, sampled every 0.2 s. While a notebook
runs, the cell being run and the time so far are shown (on a terminal in one updating line; in a log, the cells that
took 10 s or more).

The roofline: each training cell's record (runs/*.json) counts its model FLOPs (helpers.tracking.FlopCounter) and
divides the achieved FLOP/s by this machine's matrix-product peak in the precision it ran, measured at the start of
the same run (runs/machine.json, deleted first so that it is fresh). The benchmark keeps them per training cell.
"""

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUNS = ROOT / "runs"
BENCHMARKS = ROOT / "benchmarks"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- notebook-table:start -->", "<!-- notebook-table:end -->"

# What the README's table says about each notebook, besides the measured numbers.
CATALOGUE = {
    "01_pretraining_vs_sft": ("Pre-training vs supervised fine-tuning", "cpu, t4, l4, large"),
    "02_lora_qlora": ("LoRA and QLoRA: from scratch, NF4, memory, a QLoRA run", "cpu, t4, l4, large"),
    "03_peft_methods": ("LoRA, DoRA, IA3, prompt and prefix tuning compared; full, top-block and head-only "
                        "fine-tuning, and what each forgets", "cpu, t4, l4, large"),
    "04_matryoshka_embeddings": ("Embedding fine-tuning with Matryoshka loss", "cpu, t4, l4, large"),
    "05_reward_model_ppo": ("A reward model, then PPO against it (reward hacking)", "cpu, t4, l4, large"),
    "06_dpo": ("DPO from scratch and with TRL, a beta sweep", "cpu, t4, l4, large"),
    "07_orpo": ("ORPO (no reference model) vs DPO, with an SFT-only control", "cpu, t4, l4, large"),
    "08_grpo": ("GRPO with verifiable rewards (correctness + format)", "cpu, t4, l4, large"),
    "09_comparison": ("SFT, DPO, ORPO, PPO and GRPO compared: a proxy and a gold judge, with intervals",
                      "cpu, t4, l4, large"),
}


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
                            resources={"metadata": {"path": str(NOTEBOOKS)}},
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
    try:
        client.execute()
    except Exception as exc:  # the executed copy still shows the failing cell
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        progress.close()
    executed = RUNS / "executed" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, executed)
    return {"notebook": path.stem, "seconds": round(seconds, 1), "peak_memory_mb": round(peak["mb"]),
            "ok": error is None, "error": error}


def training_cells(notebook: str) -> list[dict]:
    """The roofline of each training record a notebook wrote (runs/<number>_*.json with a FLOP count)."""
    rows = []
    for path in sorted(RUNS.glob(f"{notebook[:2]}_*.json")):
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
    for name in sorted(cpu):
        topic, profiles = CATALOGUE.get(name, ("", ""))
        link = f"[{name}](notebooks/{name}.ipynb)"
        rows.append(f"| {name[:2]} | {link} | {topic} | {profiles} | {cell(cpu[name], 'seconds')} | "
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


def write_readme_table() -> None:
    text = README.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + readme_table() + "\n" + text[end:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("only", nargs="*", help="run only notebooks whose names start with these prefixes")
    parser.add_argument("--record", action="store_true", help="write benchmarks/<profile>.json and the README table")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--table", action="store_true", help="only rewrite the README table from benchmarks/")
    args = parser.parse_args()
    profile = os.environ.setdefault("COURSE_PROFILE", "cpu")
    if args.table:
        write_readme_table()
        return

    notebooks = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")
                       if not args.only or any(p.name.startswith(o) for o in args.only))
    if args.record:
        (RUNS / "machine.json").unlink(missing_ok=True)  # measure the matrix-product peak afresh in this run
    results = []
    for path in notebooks:
        print(f"running {path.name} ({profile} profile) ...", flush=True)
        result = run_notebook(path, args.timeout)
        result["training_cells"] = training_cells(path.stem)
        status = "ok" if result["ok"] else f"FAILED ({result['error']})"
        print(f"  {status} in {result['seconds']:.0f} s, peak memory {result['peak_memory_mb']} MB", flush=True)
        results.append(result)

    total = sum(r["seconds"] for r in results)
    machine = json.loads((RUNS / "machine.json").read_text()) if (RUNS / "machine.json").exists() else {}
    precisions = sorted({c["precision"] for r in results for c in r["training_cells"]})
    summary = {"profile": profile, "cores": os.cpu_count(), "machine": platform.machine(),
               "cpu": machine.get("machine"), "matmul_gflops": machine.get("gflops"),
               "precision": "/".join(precisions) or None,
               "total_seconds": round(total, 1), "notebooks": results}
    RUNS.mkdir(exist_ok=True)
    (RUNS / "course_timing.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(results)} notebooks in {total / 60:.1f} min; executed copies in runs/executed/")

    if args.record and all(r["ok"] for r in results):
        BENCHMARKS.mkdir(exist_ok=True)
        recorded = BENCHMARKS / f"{profile}.json"
        if args.only and recorded.exists():  # re-measured a few notebooks: keep the others' earlier numbers
            fresh = {r["notebook"] for r in results}
            kept = [r for r in json.loads(recorded.read_text())["notebooks"] if r["notebook"] not in fresh]
            results = sorted(kept + results, key=lambda r: r["notebook"])
            summary.update(notebooks=results, total_seconds=round(sum(r["seconds"] for r in results), 1))
        recorded.write_text(json.dumps(summary, indent=2) + "\n")
        write_readme_table()
        print(f"recorded benchmarks/{profile}.json and the README table")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
