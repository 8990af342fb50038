"""The DPO-vs-ORPO homework: the student version is made from the teacher's solution and holds none of it, its checks
fail clearly on the empty cells and on wrong answers, and the solution's runs learned (the solution itself runs under
nbval: homework/solution is in pytest's testpaths)."""
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from helpers import homework, losses
from helpers.profiles import PROFILES
from notebook_records import record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_homework  # noqa: E402

STUDENT = ROOT / "homework" / "dpo_orpo.ipynb"


def test_student_notebook_is_made_from_the_solution():
    solution = nbformat.read(make_homework.SOLUTION, as_version=4)
    assert STUDENT.read_text() == nbformat.writes(make_homework.student_notebook(solution)), \
        "homework/dpo_orpo.ipynb is out of date: run python scripts/make_homework.py"


def test_student_notebook_holds_no_solution():
    text = STUDENT.read_text()
    for leak in ("BEGIN SOLUTION", "Model answer", "F.logsigmoid(chosen_rewards - rejected_rewards)",
                 "trainer_class(model=model", "teacher's solution", '"orpo_compares_the": "odds"'):
        assert leak not in text, f"the student notebook contains {leak!r}"
    solution = make_homework.SOLUTION.read_text()
    assert solution.count(make_homework.BEGIN) == STUDENT.read_text().count("# YOUR CODE HERE") == 8


def test_a_solution_region_left_open_is_an_error():
    with pytest.raises(ValueError, match="unclosed"):
        make_homework.student_code("x = 1\n### BEGIN SOLUTION\ny = 2\n")


def test_student_checks_fail_clearly_on_the_empty_cells(tmp_path, monkeypatch):
    """Run the untouched student notebook: every part stops with 'Part N is not done yet', nothing else breaks."""
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))  # its records and checkpoints stay out of runs/
    nb = nbformat.read(STUDENT, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(STUDENT.parent)}}).execute()
    errors = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                errors[cell.source] = f"{output.ename}: {output.evalue}"
    checks = {part: next((e for source, e in errors.items() if f"check_part_{part}(" in source), None)
              for part in range(1, 7)}
    for part, error in checks.items():
        assert error and error.startswith("NotDoneYet") and f"Part {part} is not done yet" in error, (part, error)
    training = [e for source, e in errors.items() if "for label, model_id, in_4bit, method, beta in PLAN" in source]
    assert training and "Part 4 is not done yet: make_trainer() returns None" in training[0]
    unexpected = {s[:50]: e for s, e in errors.items() if not e.startswith("NotDoneYet")}
    assert not unexpected, f"cells that fail for another reason than an unfinished part: {unexpected}"


def test_part_1_names_the_wrong_answers():
    answers = {"dpo_needs_reference_model": True, "orpo_needs_reference_model": True, "orpo_compares_the": "odds",
               "larger_dpo_beta_keeps_the_policy": "closer", "lora_params_576x576_rank_8": 576 * 8,
               "copies_of_the_weights_for_dpo_with_lora": 1}
    with pytest.raises(AssertionError, match=r"orpo_needs_reference_model.*lora_params_576x576_rank_8"):
        homework.check_part_1(answers)
    with pytest.raises(homework.NotDoneYet, match="Part 1 is not done yet"):
        homework.check_part_1({**answers, "orpo_compares_the": None})


def test_part_2_catches_a_dpo_loss_without_beta_and_odds_taken_as_probabilities():
    def dpo_without_beta(pc, pr, rc, rr, beta):
        return losses.dpo_loss(pc, pr, rc, rr, beta=1.0)

    def right_log_odds(chosen, rejected):
        return losses.orpo_loss(chosen, rejected)[1]

    with pytest.raises(AssertionError, match="Part 2: dpo_loss's losses are off"):
        homework.check_part_2(dpo_without_beta, right_log_odds)
    with pytest.raises(AssertionError, match="Part 2: log_odds_ratio is off"):
        homework.check_part_2(losses.dpo_loss, lambda chosen, rejected: chosen - rejected)
    homework.check_part_2(losses.dpo_loss, right_log_odds)


def test_part_3_catches_a_config_that_logs_too_rarely():
    from trl import DPOConfig
    from trl.experimental.orpo import ORPOConfig

    profile = PROFILES["cpu"]

    def common(label, name, steps, logging_steps=1, learning_rate=profile.pref_learning_rate):
        return dict(output_dir=f"/tmp/hw-{label}-{name}", run_name=f"{label}-{name}", max_steps=steps,
                    per_device_train_batch_size=profile.pref_batch_size, logging_steps=logging_steps,
                    report_to="none", use_cpu=True, bf16=False, seed=0, learning_rate=learning_rate,
                    lr_scheduler_type="constant", max_length=profile.max_length)

    def orpo(label):
        return ORPOConfig(beta=profile.orpo_beta, **common(label, "orpo", profile.orpo_steps,
                                                           learning_rate=profile.orpo_learning_rate))

    homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **common(label, beta, profile.pref_steps)),
                          orpo, profile, "none")
    with pytest.raises(AssertionError, match="logging_steps=1"):
        homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **common(label, beta, profile.pref_steps, 5)),
                              orpo, profile, "none")
    with pytest.raises(AssertionError, match="bf16/fp16 should follow the profile"):  # TRL's default is bf16=True
        homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **{**common(label, beta, profile.pref_steps),
                                                                          "bf16": None}), orpo, profile, "none")
    # Bug: a missing learning rate, scheduler, max_length or ORPO beta passed Part 3 and cost Part 4 instead
    for change, message in [({"learning_rate": 5e-5}, "learning_rate should be the profile's"),
                            ({"lr_scheduler_type": "linear"}, "lr_scheduler_type='constant'"),
                            ({"max_length": 1024}, "max_length should be profile.max_length")]:
        with pytest.raises(AssertionError, match=message):
            homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **{
                **common(label, beta, profile.pref_steps), **change}), orpo, profile, "none")
    with pytest.raises(AssertionError, match="ORPO's lambda"):
        homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **common(label, beta, profile.pref_steps)),
                              lambda label: ORPOConfig(**common(label, "orpo", profile.orpo_steps,
                                                                learning_rate=profile.orpo_learning_rate)),
                              profile, "none")
    with pytest.raises(AssertionError, match="its own run_name"):
        homework.check_part_3(lambda label, beta: DPOConfig(beta=beta, **{**common(label, beta, profile.pref_steps),
                                                                          "run_name": "dpo"}), orpo, profile, "none")


def test_part_4_uses_the_headroom_and_asks_for_lora():
    """Bugs: a model starting at accuracy 1.0 could never pass "after > before"; a full fine-tune passed too."""
    history = [{key: 0.1 for key in homework.TRL_CURVES["DPO"]}]
    methods = {"DPO beta 0.1 · A": "DPO"}
    homework.check_part_4({"DPO beta 0.1 · A": {"history": history, "before": 1.0, "after": 1.0, "lora": True}},
                          methods)
    with pytest.raises(AssertionError, match="did not rise"):
        homework.check_part_4({"DPO beta 0.1 · A": {"history": history, "before": 1.0, "after": 0.95}}, methods)
    with pytest.raises(AssertionError, match="did not rise"):
        homework.check_part_4({"DPO beta 0.1 · A": {"history": history, "before": 0.5, "after": 0.5}}, methods)
    with pytest.raises(AssertionError, match="peft_config=lora_config"):
        homework.check_part_4({"DPO beta 0.1 · A": {"history": history, "before": 0.5, "after": 0.9,
                                                     "lora": False}}, methods)


def test_part_5_wants_a_panel_per_curve_not_a_title_that_contains_its_name():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [{key: float(i) for key in homework.TRL_CURVES["ORPO"]} for i in range(3)]
    results, methods = {"ORPO · A": {"history": history}}, {"ORPO · A": "ORPO"}

    def figure(titles):
        fig, axes = plt.subplots(1, len(titles))
        for ax, title in zip(axes, titles):
            ax.plot([0.0, 1.0, 2.0])
            ax.set_title(title)
        return fig

    homework.check_part_5(figure(["loss", "nll_loss", "log_odds_chosen", "log_odds_ratio (ORPO)"]), results, methods)
    with pytest.raises(AssertionError, match="no panel titled with 'loss'"):  # "nll_loss" is not the loss panel
        homework.check_part_5(figure(["nll_loss", "log_odds_chosen", "log_odds_ratio"]), results, methods)
    plt.close("all")


def test_part_6_catches_a_number_not_taken_from_the_runs():
    import pandas as pd

    results = {"DPO beta 0.1 · A": {"before": 0.5, "after": 0.9, "seconds": 10.0,
                                     "history": [{"rewards/margins": 0.2}, {"rewards/margins": 1.5}]}}
    right = pd.DataFrame({"before": [0.5], "after": [0.9], "seconds": [10.0], "final margin or log odds": [1.5]},
                         index=["DPO beta 0.1 · A"])
    homework.check_part_6(right, results)
    with pytest.raises(AssertionError, match="the final rewards/margins is 1.5"):
        homework.check_part_6(right.assign(**{"final margin or log odds": [0.2]}), results)


def test_the_solution_runs_learned():
    """Thresholds on the solution's record (held-out pairs, cpu profile): DPO and ORPO raise preference accuracy on
    both base models, the beta sweep ran, and the runs were real (seconds, steps)."""
    runs = record("homework_dpo_orpo")["runs"]
    assert len(runs) == 5
    for name, run in runs.items():
        assert run["after"] >= run["before"] + 0.15, (name, run["before"], run["after"])
        assert run["seconds"] > 1 and run["steps"] >= 4, name
    betas = {run["beta"] for run in runs.values() if run["method"] == "DPO"}
    assert betas == {0.1, 0.2}
    assert len({run["model"] for run in runs.values()}) == 2


def test_the_rubric_adds_up_to_the_points_it_announces():
    """Bug: RUBRIC.md announced 100 points and its table added up to 110; the README said 60 from checks + 40 read."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "homework"
    rubric = (root / "RUBRIC.md").read_text()
    rows = re.findall(r"^\| ([\d.]+) \| [^|]+ \| (\d+) \|", rubric, re.M)
    points = {part: int(p) for part, p in rows}
    announced = int(re.search(r"\((\d+) points\)", rubric).group(1))
    assert sum(points.values()) == announced == 100, points
    checks = sum(p for part, p in points.items() if not part.startswith("8"))
    read = sum(p for part, p in points.items() if part.startswith("8"))
    assert (checks, read) == (60, 40)
    assert "100 points, 60 from the checks, 40 read" in (root / "README.md").read_text()
