"""make test's cpu part: every notebook under nbval (cpu profile), the homework's solution, then the tests.

On 2 cores the notebooks ran one after another for about 57 minutes, and much of that time a notebook keeps one
core busy, not two: Python between the matrix products, kernel start and imports (about 9 s a notebook), tokenizing,
`generate`'s step loop. So the run is split in two streams that go side by side, one thread each, and the notebooks
that read both streams' records (09) run after them:

    stream A  01 02 03 04 06 07, then the tests that read no notebook record (pytest -m "not notebooks")
    stream B  05 08 and the homework's solution
    after     09 (torch's own thread count), then the tests that check the records (pytest -m notebooks)

Each stream keeps the course order of the notebooks whose records it reads (02 reads 01's, 07 06's, 08 05's reward
model); tests/test_hygiene.py checks that every course notebook is in exactly one place and that nothing reads a
record before it is written. One thread per process gives the same numbers as two, up to rounding in the last bits,
as does another CPU (the committed outputs and thresholds already allow for that), and the timings a notebook records
while the other stream shares the cores are not the benchmark's: `make bench` (scripts/run_course.py) measures those,
one notebook at a time. Output of each stream: runs/test-logs/stream_<A|B>.log, its last lines printed at the end (all
of it when it failed).

    python scripts/run_tests.py            # what make test runs
    python scripts/run_tests.py --serial   # everything in one pytest, one notebook at a time (about 15 min longer)
"""
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "runs" / "test-logs"
NOTEBOOKS = "notebooks"
HOMEWORK_SOLUTION = "homework/solution/dpo_orpo_solution.ipynb"

# Balanced by benchmarks/cpu.json's seconds (A about 1630 s of notebooks plus ~420 s of tests, B about 1360 s plus
# 08's ablation), in course order within each stream.
STREAMS = {
    "A": ["01_pretraining_vs_sft", "02_lora_qlora", "03_peft_methods", "04_matryoshka_embeddings", "06_dpo",
          "07_orpo"],
    "B": ["05_reward_model_ppo", "08_grpo", "dpo_orpo_solution"],
}
UNIT_TESTS_IN = "A"  # the stream that runs `tests -m "not notebooks"` after its notebooks
AFTER = ["09_comparison"]  # read records of both streams


def path_of(name: str) -> str:
    return HOMEWORK_SOLUTION if name == Path(HOMEWORK_SOLUTION).stem else f"{NOTEBOOKS}/{name}.ipynb"


def pytest_args(stream: str) -> list[str]:
    args = [path_of(name) for name in STREAMS[stream]]
    return args + (["tests", "-m", "not notebooks"] if stream == UNIT_TESTS_IN else [])


def side_by_side(jobs: dict[str, list[str]], one_thread: bool) -> dict[str, int]:
    """Run each job (name -> pytest arguments) in its own pytest process at once (one thread each, or torch's own
    choice); return {name: exit code}. Output goes to runs/test-logs/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    # PASSIVE: no OpenMP thread spins waiting for work (bitsandbytes' and torch's pools spun against each other)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"} if one_thread else dict(os.environ)
    started, running = time.perf_counter(), {}
    for name, args in jobs.items():
        log = open(LOGS / f"{name}.log", "w")
        print(f"[{name}] pytest {' '.join(args)}  (log runs/test-logs/{name}.log"
              f"{', one thread' if one_thread else ''})", flush=True)
        running[name] = (subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT), log)
    codes = {}
    for name, (process, log) in running.items():
        codes[name] = process.wait()
        log.close()
        print(f"[{name}] exit {codes[name]} after {time.perf_counter() - started:.0f} s", flush=True)
    for name, code in codes.items():
        lines = (LOGS / f"{name}.log").read_text().splitlines()
        print(f"== {name}: " + ("passed" if code == 0 else "FAILED, its whole log:"))
        print("\n".join(lines if code else lines[-6:]), flush=True)
    return codes


def main(argv: list[str]) -> int:
    if "--serial" in argv:
        return subprocess.call([sys.executable, "-m", "pytest"], cwd=ROOT)
    codes = side_by_side({f"stream_{name}": pytest_args(name) for name in STREAMS}, one_thread=True)
    if any(codes.values()):
        return 1
    if side_by_side({"after": [path_of(name) for name in AFTER]}, one_thread=False)["after"]:
        return 1
    print("[records] pytest tests -m notebooks", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", "tests", "-m", "notebooks"], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
