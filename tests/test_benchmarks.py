"""The README's notebook table is built from benchmarks/*.json, and the GPU files say plainly which numbers are
estimates (no GPU has run the course yet) and which were measured; `make course` shows its progress."""
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import run_course  # noqa: E402
from notebook_records import record  # noqa: E402


def test_readme_table_is_the_one_the_benchmark_files_give():
    assert run_course.readme_table() in (ROOT / "README.md").read_text(), \
        "the README's notebook table is out of date: run python scripts/run_course.py --table"


def test_readme_results_are_what_the_records_give():
    """Issue 20: the README's Results section is generated from the records a make bench run kept."""
    bench = json.loads((ROOT / "benchmarks" / "cpu.json").read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(run_course.RESULTS_START):readme.index(run_course.RESULTS_END)]
    assert section.strip() == (run_course.RESULTS_START + "\n" + run_course.results_section(bench)).strip(), \
        "the README's results are out of date: run python scripts/run_course.py --table"
    # every notebook that trains something has its headline, and each row is the helper's reading of its record
    assert {row["notebook"] for row in bench["results"]} == {notebook for notebook, *_ in run_course.HEADLINES}
    assert {"01", "02", "03", "04", "05", "06", "07", "08"} <= {row["notebook"] for row in bench["results"]}
    assert bench["comparison"], "notebook 09's table"
    specs = {(n, name, tuple(keys)): what for n, name, keys, what, digits in run_course.HEADLINES}
    assert [(r["notebook"], r["record"], tuple(r["keys"])) for r in bench["results"]] == list(specs), \
        "HEADLINES changed since make bench: run python scripts/run_course.py --results"
    assert [r["what"] for r in bench["results"]] == list(specs.values())


@pytest.mark.notebooks
def test_a_fresh_run_lands_within_the_recorded_results():
    """The numbers in the README are the course's, not one lucky run: this run's records (make test ran the
    notebooks just before) give each headline within the recorded 95% interval's width of the recorded value."""
    bench = json.loads((ROOT / "benchmarks" / "cpu.json").read_text())
    specs = {(name, tuple(keys)): (what, digits) for n, name, keys, what, digits in run_course.HEADLINES}
    for row in bench["results"]:
        assert (row["record"], tuple(row["keys"])) in specs, f"{row['what']}: no longer in HEADLINES"
        what, digits = specs[row["record"], tuple(row["keys"])]
        fresh = run_course.headline(record(row["record"]), row["keys"], what, digits)
        low, high = row["ci95"]
        assert fresh["n"] == row["n"], f"{row['what']}: n {fresh['n']} now, {row['n']} recorded"
        assert abs(fresh["value"] - row["value"]) <= max(high - low, 0.05), \
            f"{row['what']}: {fresh['change']} now, {row['change']} recorded by make bench"


@pytest.mark.notebooks
@pytest.mark.parametrize("name, keys", sorted(run_course.EXPECTED), ids=lambda v: v if isinstance(v, str) else "")
def test_each_headline_reads_as_its_notebook_expects(name, keys):
    """A notebook's headline in its metadata may say what its interval must read (issue 22: a new notebook's learning
    effect is tested without a test file of its own). The notebook-specific tests check more, with margins."""
    what, digits = next((w, d) for _, r, k, w, d in run_course.HEADLINES if (r, k) == (name, keys))
    row = run_course.headline(record(name), keys, what, digits)
    assert row["reads"] == run_course.EXPECTED[(name, keys)], f"{what}: {row['change']} reads {row['reads']}"


def test_a_headline_reads_a_before_after_entry_and_a_claim():
    interval = {"value": 0.5, "ci95": [0.25, 0.75], "n": 20}
    record = {"name": "x", "intervals": {"exact_match": {"before": {"value": 0.1, "ci95": [0.0, 0.2], "n": 20},
                                                         "after": {"value": 0.6, "ci95": [0.4, 0.8], "n": 20},
                                                         "change": interval, "direction": "rose"}},
              "claims": {"A - B": {"value": -0.01, "ci95": [-0.05, 0.03], "n": 20}}}
    row = run_course.headline(record, ["intervals", "exact_match"], "exact match")
    assert (row["before"], row["after"], row["change"], row["n"], row["reads"]) == \
        ("0.10 [0.00, 0.20]", "0.60 [0.40, 0.80]", "0.50 [0.25, 0.75]", 20, "rose")
    claim = run_course.headline(record, ["claims", "A - B"], "a claim", digits=3)
    assert (claim["before"], claim["change"], claim["reads"]) == ("—", "-0.010 [-0.050, 0.030]", "within noise")
    record["claims"]["A - B"]["ci95"] = [0.01, 0.03]
    assert run_course.headline(record, ["claims", "A - B"], "a claim")["reads"] == "> 0"
    with pytest.raises(KeyError, match=r"x: no intervals/accuracy in its record \(available: \['exact_match'\]\)"):
        run_course.headline(record, ["intervals", "accuracy"], "accuracy")


@pytest.mark.parametrize("profile", ["t4", "l4"])
def test_gpu_benchmarks_mark_their_estimates(profile):
    record = json.loads((ROOT / "benchmarks" / f"{profile}.json").read_text())
    notebooks = {path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {row["notebook"] for row in record["notebooks"]} == notebooks
    for row in record["notebooks"]:
        assert row.get("estimate") is True or row["ok"] is True, f"{row['notebook']}: neither measured nor an estimate"
    if any(row.get("estimate") for row in record["notebooks"]):
        assert record["note"].startswith("ESTIMATES, not measurements")


def test_estimates_show_as_estimates_in_the_table():
    rows = {"seconds": 1200, "peak_memory_mb": 3482, "estimate": True}
    assert run_course.cell(rows, "seconds") == "~20 min (est.)"
    assert run_course.cell({**rows, "estimate": False}, "seconds") == "20.0 min"
    assert run_course.cell({**rows, "peak_memory_mb": None}, "peak_memory_mb") == "—"


def test_cpu_benchmark_records_the_roofline_of_every_training_cell():
    bench = json.loads((ROOT / "benchmarks" / "cpu.json").read_text())
    peaks = bench["matmul_gflops"]
    assert peaks["float32"] > 0 and peaks["bfloat16"] > 0, "make bench measures the matrix-product peak"
    for row in bench["notebooks"]:
        assert row["training_cells"], f"{row['notebook']}: no record with a FLOP count"
        for cell in row["training_cells"]:
            achieved = cell["flops"] / cell["seconds"] / 1e9
            assert abs(cell["gflops_per_s"] - achieved) <= 0.01 * achieved + 0.1, cell
            assert cell["peak_gflops_per_s"] == peaks["bfloat16" if cell["precision"] == "bfloat16" else "float32"]
            assert 0 < cell["peak_share"] <= 1, cell  # above 1 would mean a FLOP count that is wrong


def test_a_partial_record_measures_shares_against_the_benchmarks_peak(tmp_path, monkeypatch, capsys):
    """`run_course.py --record 06` once took the peak from a runs/machine.json that a run sharing the cores had
    measured (2.1 GFLOP/s instead of 149), and recorded shares of 3000%."""
    runs, benchmarks = tmp_path / "runs", tmp_path / "benchmarks"
    benchmarks.mkdir()
    monkeypatch.setattr(run_course, "ROOT", tmp_path)
    monkeypatch.setattr(run_course, "RUNS", runs)
    monkeypatch.setattr(run_course, "BENCHMARKS", benchmarks)
    runs.mkdir()
    stale = json.dumps({"machine": "CPU X | 2 threads", "gflops": {"float32": 2.1}})
    (runs / "machine.json").write_text(stale)
    assert run_course.keep_recorded_peak("cpu") is None  # nothing recorded: the notebooks measure afresh
    assert not (runs / "machine.json").exists()
    (runs / "machine.json").write_text(stale)
    peaks = {"float32": 148.8, "bfloat16": 1.3}
    (benchmarks / "cpu.json").write_text(json.dumps({"cpu": "CPU X | 2 threads", "matmul_gflops": peaks}))
    monkeypatch.setattr(run_course, "cpu_model", lambda: "CPU X")
    run_course.keep_recorded_peak("cpu")
    machine = json.loads((runs / "machine.json").read_text())
    assert machine["machine"] == "CPU X | 2 threads" and machine["gflops"] == peaks
    assert "warning" not in capsys.readouterr().out
    monkeypatch.setattr(run_course, "cpu_model", lambda: "CPU Y")  # another machine: the rows would mix, say so
    run_course.keep_recorded_peak("cpu")
    assert "measured on CPU X, this is CPU Y" in capsys.readouterr().out


def test_share_of_peak_shows_the_range_of_a_notebooks_cells():
    row = {"training_cells": [{"peak_share": 0.061, "precision": "bfloat16"},
                              {"peak_share": 0.142, "precision": "bfloat16"}]}
    assert run_course.share(row) == "6-14% (bfloat16)"
    assert run_course.share({"training_cells": [{"peak_share": 0.3, "precision": "float32"}]}) == "30% (float32)"
    assert run_course.share(None) == "—"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_course_progress_shows_the_running_cell_and_where_the_time_went():
    """Issue 20: `make course` shows per notebook the cell being run and the time so far (one updating line on a
    terminal) and, in a log, the cells that took long; checked on a real kernel through nbclient's hooks."""
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# a title"),
        nbformat.v4.new_code_cell("# a comment first\nimport time\ntime.sleep(0.5)"),
        nbformat.v4.new_code_cell(""),  # empty: nbclient skips it, and so does the count
        nbformat.v4.new_code_cell("x = 1"),
    ])
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        progress = run_course.Progress(notebook, stream=stream, slow=0.4)
        NotebookClient(notebook, kernel_name="python3", on_cell_execute=progress.on_cell_execute,
                       on_cell_executed=progress.on_cell_executed).execute()
        progress.close()  # what run_notebook does when the notebook ends
        assert progress.code_cells == progress.done == 2
    # the log: only the slow cell, named by its first line of code, with its time
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"  \[0:0\d\] cell 1/2 took \d s: import time", lines[0]), lines
    # the terminal: each cell as it starts, on one line rewritten in place, cleared at the end
    shown = terminal.getvalue()
    assert "cell 1/2: import time" in shown and "cell 2/2: x = 1" in shown and "\n" not in shown
    assert shown.endswith("\r\033[K")


@pytest.mark.slow
def test_the_course_runs_two_notebooks_at_a_time_each_after_the_records_it_reads(tmp_path, monkeypatch, capsys):
    """`run_course.py --workers 2` runs two notebooks at once, one thread each (run_course.run_side_by_side): b reads
    the record a writes, so it starts only after a has passed (its cell fails otherwise); d reads c's, and c fails,
    so d is reported as not run; every notebook leaves its executed copy, its log and its result."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("COURSE_RUNS_DIR", str(runs))  # the children's runs/ (they read it at import)
    monkeypatch.setattr(run_course, "RUNS", runs)
    monkeypatch.setattr(run_course.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run_course, "METADATA", {"a": {"records": ["a_rec"]}, "b": {"needs": ["a_rec"]},
                                                 "c": {"records": ["c_rec"]}, "d": {"needs": ["c_rec"]}, "e": {}})
    monkeypatch.setattr(run_course, "WRITTEN_BY", {"a_rec": "a", "c_rec": "c"})
    cells = {  # b first: started at once, before a wrote its record, it would fail
        "b": "import os, pathlib\nassert pathlib.Path(os.environ['COURSE_RUNS_DIR'], 'a_rec.json').exists()",
        "a": "import json, os, pathlib, time\ntime.sleep(2)\npathlib.Path(os.environ['COURSE_RUNS_DIR'], 'a_rec.json')"
             ".write_text(json.dumps({'threads': os.environ['OMP_NUM_THREADS']}))",
        "c": "raise ValueError('c broke')",
        "d": "x = 1",
        "e": "x = 1",
    }
    paths = []
    for name, code in cells.items():
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), paths[-1])
    results = run_course.run_side_by_side(paths, workers=2, timeout=120)
    assert [r["notebook"] for r in results] == list(cells)
    ok = {r["notebook"]: r["ok"] for r in results}
    assert ok == {"a": True, "b": True, "c": False, "d": False, "e": True}, results
    assert results[2]["error"] == "ValueError: c broke" and results[3]["error"] == "not run (needs c)"
    assert json.loads((runs / "a_rec.json").read_text()) == {"threads": "1"}  # one thread each while two run
    assert all((runs / "executed" / f"{name}.ipynb").exists() for name in "abce")
    assert "ValueError" in (runs / "course-logs" / "c.log").read_text()
    out = capsys.readouterr().out
    assert "start a (1 thread)" in out and "d: not run (needs c)" in out


def _close(stated: float, measured: float) -> bool:
    """A time written by hand against the last make bench: within a minute or a quarter (timings vary ±15%)."""
    return abs(stated - measured) <= max(1.0, 0.25 * measured)


def _bench_minutes(profile: str) -> dict:
    rows = json.loads((ROOT / "benchmarks" / f"{profile}.json").read_text())["notebooks"]
    return {row["notebook"]: (row["seconds"] / 60, row.get("estimate", False)) for row in rows}


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem[:2])
def test_each_notebooks_hardware_table_states_the_benchmarked_times(path):
    """Issue 22: the 'Hardware and time' table of a notebook says what benchmarks/ holds: the cpu time of the last
    make bench (within a minute or 25%); the GPU profiles' estimates come from the table (run_course --table)."""
    for profile in ("cpu", "t4", "l4"):
        stated, row = run_course.stated_time(path, profile)
        minutes, estimate = _bench_minutes(profile)[path.stem]
        if estimate:
            assert "(estimate)" in row and stated == pytest.approx(minutes), \
                f"{path.stem}, {profile}: {stated} min here, {minutes:.1f} in benchmarks/{profile}.json: run " \
                "python scripts/run_course.py --table"
        else:
            assert _close(stated, minutes), \
                f"{path.stem}, {profile}: ~{stated:g} min here, {minutes:.1f} min measured (benchmarks/{profile}.json)"


def test_the_workshop_time_table_states_the_benchmarked_times():
    text = (ROOT / "WORKSHOP.md").read_text()
    rows = [line for line in text.split("## Time per notebook and profile")[1].splitlines()
            if re.match(r"\| \d\d ", line)]
    cpu, t4 = _bench_minutes("cpu"), _bench_minutes("t4")
    assert len(rows) == 9, "one row per notebook"
    for line in rows:
        number, cpu_cell, _, t4_cell = [cell.strip() for cell in line.strip("| ").split("|")]
        notebook = next(name for name in cpu if name.startswith(number[:2]))
        assert cpu_cell == f"{cpu[notebook][0]:.1f} min", \
            f"WORKSHOP.md, {number}: cpu {cpu_cell}, {cpu[notebook][0]:.1f} min measured: run run_course.py --table"
        assert run_course.minutes(t4_cell) == pytest.approx(t4[notebook][0]), f"WORKSHOP.md, {number}: t4 {t4_cell}"
