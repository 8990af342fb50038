"""Notebooks and packaging follow the course rules: no secrets or machine paths, the same skeleton everywhere."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import refresh_outputs  # noqa: E402
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HOMEWORK = sorted((ROOT / "homework").rglob("*.ipynb"))
FORBIDDEN = {
    "machine path": refresh_outputs.MACHINE_PATH,  # what the refresh drops from outputs
    "Hugging Face token": re.compile(r"hf_[A-Za-z0-9]{20,}"),
    "W&B key": re.compile(r"WANDB_API_KEY\s*=\s*['\"]?[0-9a-f]{20,}"),
    "OpenAI-style key": re.compile(r"sk-[A-Za-z0-9]{20,}"),
}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS + HOMEWORK, ids=lambda p: p.name)
def test_no_secrets_or_machine_paths(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # a figure's base64 can spell "/tmp/" by chance: it is no text
        for output in cell.get("outputs", []):
            for key in [k for k in output.get("data", {}) if k.startswith("image/")]:
                del output.data[key]
    text = nbformat.writes(nb)
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{path.name} contains a {what}: {pattern.search(text).group(0)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: a title"
    assert "colab.research.google.com" in nb.cells[0].source, "an Open-in-Colab badge"
    for section in ("What you will learn", "Hardware and time", "Exercises", "Summary"):
        assert section in markdown, f"missing section: {section}"
    for profile in ("`cpu`", "`t4`", "`l4`"):
        assert profile in markdown, f"the hardware table should list {profile}"
    setup = nb.cells[1].source
    assert "google.colab" in setup and "%run finetuning-course/scripts/colab_setup.py --drive={KEEP_RUNS_ON_DRIVE}" \
        in setup and "KEEP_RUNS_ON_DRIVE = False" in setup, "cell 1: the Colab setup cell (scripts/colab_setup.py)"
    assert "sys.path" not in code, "helpers is installed (make install: pip install -e .); Colab's setup adds it"
    assert "set_seed(" in code, "seeds fixed"
    assert "helpers.select_profile()" in code, "sizes come from the profile"


SOLUTION = ROOT / "homework" / "solution" / "dpo_orpo_solution.ipynb"
STUDENT = ROOT / "homework" / "dpo_orpo.ipynb"
TIMESTAMP = refresh_outputs.TIMESTAMP  # what the refresh drops


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.source.strip()]


@pytest.mark.parametrize("path", NOTEBOOKS + [SOLUTION], ids=lambda p: p.name)
def test_committed_outputs_show_a_run(path):
    """Issue 20: a reader on GitHub or in Colab sees a cpu-profile run's results before running anything
    (python scripts/refresh_outputs.py after make bench writes them)."""
    cells = _code_cells(path)
    with_outputs = [c for c in cells if c.outputs]
    assert len(with_outputs) >= 0.6 * len(cells), \
        f"{len(with_outputs)} of {len(cells)} code cells keep outputs: run make bench (it refreshes them)"
    assert path.stat().st_size < 2 * 2**20, f"{path.name} is over 2 MB: save its figures smaller"
    for cell in with_outputs:
        # nbval skips a cell without an execution count, and a reader wants to see the order it ran in
        assert cell.execution_count, f"outputs without an execution count: {cell.source[:60]!r}"
        for output in cell.outputs:
            assert not (output.output_type == "stream" and output.name == "stderr"), f"stderr kept: {cell.source[:60]!r}"
            data = output.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data and "<progress" not in str(data), \
                f"a widget or progress bar kept (GitHub cannot show it): {cell.source[:60]!r}"
            text = output.get("text", "") + "".join(v for k, v in data.items() if isinstance(v, str) and
                                                    not k.startswith("image/"))
            assert not TIMESTAMP.search(text), f"an absolute timestamp kept: {TIMESTAMP.search(text).group(0)!r}"
        assert "execution" not in cell.metadata, "nbclient's timings in the cell metadata"
    checked = [c for c in cells if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert all(c.outputs and c.execution_count for c in checked), \
        "checked cells need their expected outputs and an execution_count (nbval skips unrun cells)"
    if "helpers.write_run(" in "\n".join(c.source for c in cells):  # a training notebook shows a figure
        assert any("image/png" in o.get("data", {}) for c in cells for o in c.outputs), "no figure among the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS + [SOLUTION], ids=lambda p: p.name)
def test_the_code_a_notebook_teaches_is_shown_and_checked(path):
    """Each from-scratch piece that lives in helpers/ is printed where it is taught, and nbval checks the printout:
    a change to the helper that is not refreshed in the notebook fails the tests."""
    for cell in _code_cells(path):
        if "inspect.getsource(" in cell.source:
            assert "# NBVAL_CHECK_OUTPUT" in cell.source, f"mark the printed source as checked: {cell.source[:60]!r}"
            code = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
            assert all("getsource(" in line or line.startswith("import ") for line in code), \
                "print the source in a cell of its own (other output would make the check machine-dependent)"


def test_the_student_homework_starts_empty():
    assert all(not c.outputs and c.execution_count is None for c in _code_cells(STUDENT))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_training_notebooks_write_their_run_records(path):
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    if ".train(" in code:
        # time, memory and the model FLOPs of the models it trains (measure(model) counts them for the roofline),
        # summed over every session of a resumed run (training_cost), so that a rerun records what training cost
        assert "helpers.write_run(" in code and "cost=" in code
        # (helpers.training_run does both around a trainer; notebook 05's own PPO loop calls them itself)
        assert re.search(r"helpers\.(measure|training_run)\([a-z_]", code) and "helpers.measure()" not in code
        assert (code.count("helpers.training_cost(") + code.count("helpers.training_run(")
                >= code.count("resume_from_checkpoint=")), \
            "every resumable training run passes its cost through helpers.training_cost (or helpers.training_run)"


def test_only_notebook_02_spells_out_the_4bit_config():
    """02 builds QLoRA's BitsAndBytesConfig field by field (the lesson); the others load with helpers.nf4_config."""
    for path in NOTEBOOKS + HOMEWORK:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert ("BitsAndBytesConfig(" in code) == path.name.startswith("02_"), path.name


def test_requirements_are_pinned_and_colab_keeps_its_torch():
    for name in ("requirements.txt", "requirements-colab.txt", "requirements-offline.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line), f"{name}: unpinned {line!r}"
    colab = (ROOT / "requirements-colab.txt").read_text()
    assert not re.search(r"^torch\b", colab, re.M), "Colab must keep its own torch"
    # Colab keeps what its kernel preloads (replacing it on disk means a restart); local installs pin them
    for preloaded in ("pandas", "matplotlib", "psutil", "numpy", "pyarrow"):
        assert not re.search(rf"^{preloaded}\b", colab, re.M), f"requirements-colab.txt must not pin {preloaded}"
    for name in ("pandas", "matplotlib", "psutil"):
        assert re.search(rf"^{name}==", (ROOT / "requirements.txt").read_text(), re.M), f"pin {name} locally"
    assert "-r requirements-colab.txt" in (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make course" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile and "--no-deps -r requirements-offline.txt" in makefile


FORM_BY_SUBSTRING = re.compile(r"""["'](sentence|value)["']\s+(not\s+)?in\s""")


@pytest.mark.parametrize("path", NOTEBOOKS + HOMEWORK, ids=lambda p: p.name)
def test_the_requested_answer_form_is_read_by_one_function(path):
    # "Reply with only the value, no sentence." asks for the value: a substring test for "sentence" misreads it (18
    # of the 100 held-out preference prompts), as notebook 05's probe and exercise checker once did. Every notebook
    # asks helpers.requested_form, the one reader, tested in test_tasks.py
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            found = FORM_BY_SUBSTRING.search(cell.source)
            assert not found, f"{path.name}: {found.group(0)!r}...: use helpers.requested_form(prompt) instead"


@pytest.mark.parametrize("path", NOTEBOOKS + [SOLUTION], ids=lambda p: p.name)
def test_each_notebook_says_what_it_writes_and_reads(path):
    """Issue 22: a notebook's metadata "course" is the one place that lists its records, the records it needs and its
    README headlines (scripts/run_course.py reads it for the README, tests/notebook_records.py to run what a test
    needs). It must agree with the code: before this, 07 read runs/06_dpo.json without saying so, and a fresh
    `pytest tests/test_preference_effects.py` could not run 07 by itself."""
    course = nbformat.read(path, as_version=4).metadata.get("course")
    assert course and course.get("topic") and course.get("records"), f"{path.name}: metadata course.topic/records"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    prefix = "homework" if path == SOLUTION else path.name[:2]
    for record in course["records"]:
        assert record.startswith(prefix + "_") and f'"{record}"' in code, f"{path.name} does not write {record}"
    written = set(re.findall(r'write_run\(\s*"(\w+)"', code))
    assert written <= set(course["records"]), f"{path.name} writes {written - set(course['records'])}: list them"
    needs = set(course.get("needs", []))
    read = {name for name in re.findall(r'read_run\(\s*"(\w+)"\)', code) if not name.startswith(prefix + "_")}
    assert read <= needs, f"{path.name} reads {read - needs}: add them to its metadata course.needs"
    for notebook in set(re.findall(r'trained_adapter\([^)]*"(\d\d)"\)', code)) - {prefix}:
        assert any(name.startswith(notebook + "_") for name in needs), \
            f"{path.name} loads notebook {notebook}'s adapter: add its record to course.needs"
    if "load_reward_model(" in code and prefix != "05":
        assert "05_reward_model" in needs, f"{path.name} loads notebook 05's reward model: add 05_reward_model to needs"
    for record, keys, what, digits, *expect in course.get("headlines", []):
        assert record in course["records"] and what and isinstance(digits, int), (record, keys)
        assert expect in ([], ["rose"], ["fell"], ["> 0"], ["< 0"]), f"{record}: expect one of rose, fell, > 0, < 0"


def test_make_test_runs_every_notebook_once_after_the_records_it_reads():
    """make test runs two notebooks at a time (scripts/run_tests.py): each a job that waits for the notebooks whose
    records it reads. A notebook missing from the jobs would never be tested; one started before a notebook whose
    records it reads would fail on a clean clone (or read a stale record locally)."""
    import run_course
    import run_tests

    jobs = run_tests.jobs()
    course = [path.stem for path in run_course.course_notebooks()]
    assert sorted(jobs) == sorted(course + [run_tests.UNIT_TESTS])
    assert jobs["02_lora_qlora"]["needs"] == {"01_pretraining_vs_sft"} and jobs["07_orpo"]["needs"] == {"06_dpo"}
    assert jobs["09_comparison"]["needs"] >= {"05_reward_model_ppo", "06_dpo", "07_orpo", "08_grpo"}
    assert all(Path(ROOT / job["args"][0]).exists() for name, job in jobs.items() if name != run_tests.UNIT_TESTS)
    assert jobs[run_tests.UNIT_TESTS]["args"] == ["tests", "-m", "not notebooks"]
    assert "scripts/run_tests.py" in (ROOT / "Makefile").read_text()


def fake_run(todo, workers, fails=()):
    """run_tests.schedule with jobs that end one at a time, in start order: (result, start log, most at once, the
    jobs started alone)."""
    import run_tests

    started, running, most, alone_ones = [], [], [0], []

    def start(job, alone):
        assert all(need in started and need not in running for need in todo[job]["needs"]), (job, started)
        if alone:
            alone_ones.append(job)
        started.append(job)
        running.append(job)
        most[0] = max(most[0], len(running))

    def poll():
        job = running.pop(0)
        return {job: job not in fails}

    return run_tests.schedule(todo, workers, start, poll), started, most[0], alone_ones


def test_the_test_schedule_waits_for_needs_and_skips_what_a_failure_blocks():
    def job(seconds, *needs):
        return {"args": [], "needs": set(needs), "seconds": seconds}

    todo = {"01": job(100), "02": job(100, "01"), "05": job(300), "08": job(600, "05"), "09": job(400, "02", "08"),
            "hw": job(300), "unit": job(400)}
    result, started, most, _ = fake_run(todo, workers=2)
    assert set(result.values()) == {"passed"} and sorted(started) == sorted(todo) and most == 2
    assert started[0] == "05"  # the longest chain behind it: 05, 08, 09
    result, started, _, _ = fake_run(todo, workers=2, fails={"05"})
    assert result["05"] == "FAILED" and result["08"] == "not run (needs 05)" and result["09"] == "not run (needs 08)"
    assert {"01", "02", "hw", "unit"} <= {job for job, state in result.items() if state == "passed"}
    result, started, most, alone = fake_run(todo, workers=1)
    assert most == 1 and set(result.values()) == {"passed"} and alone == [started[-1]]  # the last takes every core
    result, _, _, _ = fake_run({**todo, "x": job(5, "missing")}, workers=2)  # a need no job meets: reported, not lost
    assert result["x"] == "not run (needs missing)" and result["09"] == "passed"
    with pytest.raises(ValueError, match="waits, through its needs, for itself"):
        fake_run({"a": job(1, "b"), "b": job(1, "a")}, workers=2)


@pytest.mark.slow
def test_the_test_runner_runs_each_job_in_pytest_and_says_what_failed(tmp_path, capfd):
    import run_tests

    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert 1 == 2, 'the message'\n")
    ok, bad = str(tmp_path / "test_ok.py"), str(tmp_path / "test_bad.py")

    def job(path, *needs):
        return {"args": [path], "needs": set(needs), "seconds": 1}

    todo = {"ok": job(ok), "bad": job(bad), "after bad": job(ok, "bad")}
    assert run_tests.run(2, todo, then=(ok,), logs=tmp_path / "logs") == 1
    out = capfd.readouterr().out
    assert "== after bad: not run (needs bad)" in out and "== bad: FAILED, its log:" in out and "the message" in out
    assert "then pytest" not in out and (tmp_path / "logs" / "after_bad.log").exists() is False
    assert run_tests.run(2, {"ok": job(ok), "ok too": job(ok, "ok")}, then=(ok,),
                         logs=tmp_path / "logs") == 0
    assert "1 passed" in (tmp_path / "logs" / "ok_too.log").read_text() and "then pytest" in capfd.readouterr().out
