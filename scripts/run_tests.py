"""make test's cpu part: every notebook under nbval (cpu profile), the homework's solution, then the tests.

On 2 cores the notebooks ran one after another for about an hour, and much of that time a notebook keeps one core
busy, not two: Python between the matrix products, kernel start and imports (about 9 s a notebook), tokenizing,
`generate`'s step loop. So two notebooks run side by side, one thread each, as separate pytest processes:

- a notebook starts once the notebooks whose records it reads (its metadata "needs", scripts/run_course.py) have
  passed; of the ready ones, the one with the longest chain of notebooks waiting behind it starts first (the seconds
  in benchmarks/cpu.json: 05, then 08, then 09), and the last job left takes every core;
- the tests that read no record (`pytest tests -m "not notebooks"`) are one more job of the same queue;
- when every notebook has passed, the tests that check their records (`pytest tests -m notebooks`) run alone.

A notebook whose needs failed is not run (it would fail for the same reason). One thread per process rounds differently
from two, as another CPU does: most numbers agree to the last digits, but where a run samples, the difference can grow
into other answers (08's GRPO control learned others in a full run with one thread), and the NBVAL-checked outputs
and the learning-effect thresholds allow for that. The times a notebook records while another shares the cores are
not the benchmark's: `make bench` (scripts/run_course.py) measures those, one notebook at a time. Each job's
output: runs/test-logs/<job>.log, printed in full when it failed.

    python scripts/run_tests.py              # what make test runs
    python scripts/run_tests.py --workers 1  # one job at a time (each with every core)
    python scripts/run_tests.py --serial     # plain `pytest`: everything in one process, in order
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import run_course  # scripts/, beside this file: the notebooks and their metadata "needs"
from run_course import remaining, schedule  # noqa: F401 (shared with run_course.py --workers; tests call it here)

ROOT = Path(__file__).resolve().parent.parent

LOGS = ROOT / "runs" / "test-logs"
UNIT_TESTS = "unit tests"
UNIT_TESTS_SECONDS = 450  # `pytest tests -m "not notebooks"` on 2 cores (the Colab rebuild is most of it)
DEFAULT_SECONDS = 300  # a notebook the benchmark has not timed yet


def jobs() -> dict[str, dict]:
    """{job: {"args": pytest arguments, "needs": jobs that must pass first, "seconds": its expected time}}."""
    try:
        bench = run_course.read_benchmark("cpu")
    except (ValueError, KeyError):  # a benchmark file that does not parse: every notebook gets the default
        bench = {}
    out = {}
    for path in run_course.course_notebooks():
        needs = run_course.METADATA[path.stem].get("needs", [])
        unknown = [record for record in needs if record not in run_course.WRITTEN_BY]
        if unknown:
            raise ValueError(f"{path.name} needs {unknown}, which no notebook's metadata course.records lists")
        out[path.stem] = {"args": [str(path.relative_to(ROOT))],
                          "needs": {run_course.WRITTEN_BY[record] for record in needs},
                          "seconds": bench.get(path.stem, {}).get("seconds", DEFAULT_SECONDS)}
    out[UNIT_TESTS] = {"args": ["tests", "-m", "not notebooks"], "needs": set(), "seconds": UNIT_TESTS_SECONDS}
    return out


def run(workers: int, todo: dict | None = None, then: tuple = ("tests", "-m", "notebooks"), logs: Path = LOGS) -> int:
    """Run `todo` (default: jobs()) with `workers` at once, then `pytest *then` if all passed; the exit code."""
    todo = jobs() if todo is None else todo
    logs.mkdir(parents=True, exist_ok=True)
    # One thread each when two share 2 cores. PASSIVE: no OpenMP thread spins waiting for work (bitsandbytes' and
    # torch's pools spun against each other).
    cores = os.cpu_count() or 2
    began, processes = time.perf_counter(), {}

    def log_of(job):
        return logs / f"{job.replace(' ', '_')}.log"

    def start(job, alone):
        threads = cores if alone else max(1, cores // workers)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
        log = open(log_of(job), "w")
        processes[job] = (subprocess.Popen([sys.executable, "-m", "pytest", *todo[job]["args"]], cwd=ROOT, env=env,
                                           stdout=log, stderr=subprocess.STDOUT), log, time.perf_counter())
        print(f"{time.perf_counter() - began:6.0f} s  start  {job}  (pytest {' '.join(todo[job]['args'])}, "
              f"{threads} thread{'s' * (threads > 1)})", flush=True)

    def poll():
        while True:
            ended = {job: p for job, p in processes.items() if p[0].poll() is not None}
            if ended:
                break
            time.sleep(1)
        for job, (process, log, started) in ended.items():
            log.close()
            del processes[job]
            last = log_of(job).read_text(errors="replace").strip().splitlines()[-1:]
            print(f"{time.perf_counter() - began:6.0f} s  {'passed' if process.returncode == 0 else 'FAILED'} {job} "
                  f"after {time.perf_counter() - started:.0f} s: {last[0] if last else ''}", flush=True)
        return {job: process.returncode == 0 for job, (process, _, _) in ended.items()}

    try:
        result = schedule(todo, workers, start, poll)
    finally:  # an error here must not leave pytest processes running
        for process, log, _ in processes.values():
            process.kill()
            log.close()
    bad = {job: state for job, state in result.items() if state != "passed"}
    for job, state in bad.items():  # what did not run first, then each failed log whole: pytest's summary ends it
        if state != "FAILED":
            print(f"== {job}: {state}")
    for job, state in bad.items():
        if state == "FAILED":
            print(f"\n== {job}: FAILED, its log:\n" + log_of(job).read_text(errors="replace"), flush=True)
    if bad:
        return 1
    print(f"{time.perf_counter() - began:6.0f} s  every job passed; then pytest {' '.join(then)}", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", *then], cwd=ROOT)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="jobs at once (default 2)")
    parser.add_argument("--serial", action="store_true", help="plain pytest, one process")
    args = parser.parse_args(argv)
    if args.serial:
        return subprocess.call([sys.executable, "-m", "pytest"], cwd=ROOT)
    return run(args.workers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
