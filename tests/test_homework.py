"""The DPO-vs-ORPO homework: the student version is made from the teacher's solution and holds none of it, its checks
fail clearly on the empty cells and on wrong answers, and the solution's runs learned (the solution itself runs under
nbval: homework/solution is in pytest's testpaths)."""
import sys
from pathlib import Path

import nbformat
import pytest
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


@pytest.mark.slow  # 20-35 s: real training runs
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
    for change, message in [({"learning_rate": 5e-5}, "learning_rate is 5e-05, the plan says 0.001"),
                            ({"lr_scheduler_type": "linear"}, "lr_scheduler_type is 'linear', the config's default, "
                                                              "the plan says 'constant'"),
                            ({"max_length": 1024}, "max_length is 1024, the config's default, the plan says 128")]:
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


def plan_builders(profile, plan):
    """dpo_config and orpo_config as the solution writes them: every setting of `plan`, precision from `profile`."""
    from trl import DPOConfig
    from trl.experimental.orpo import ORPOConfig

    def rules(name):
        return dict(output_dir=f"/tmp/hw-{name}", run_name=f"hw-{name}", logging_steps=1, report_to="none",
                    use_cpu=profile.use_cpu, bf16=profile.bf16, fp16=profile.fp16,
                    gradient_checkpointing=profile.gradient_checkpointing)

    def dpo(label, beta):
        return DPOConfig(**{**rules(f"dpo-{label}-{beta}"), **plan["DPO"], "beta": beta})

    def orpo(label):
        return ORPOConfig(**{**rules(f"orpo-{label}"), **plan["ORPO"]})

    return dpo, orpo


def test_the_report_mapping_names_real_trl_fields_and_the_removed_ones_are_gone():
    """Every TRL name of the 2024 report's mapping is a field of the installed DPOConfig / ORPOConfig, the names it
    says are gone (max_prompt_length, warmup_ratio, ...) are, and report_plan() holds the report's numbers."""
    from transformers import TrainingArguments

    classes = homework.config_classes()
    for setting in homework.REPORT_SETTINGS:
        if setting.trl_name is not None:
            for method in setting.configs or classes:
                assert setting.trl_name in homework.config_fields(classes[method]), (setting, method)
    for name, (methods, _) in homework.GONE.items():
        for method in methods:
            assert name not in homework.config_fields(classes[method]), (name, method)
    for name in ("warmup_ratio", "evaluation_strategy"):
        assert name not in homework.config_fields(TrainingArguments)
    assert "max_completion_length" in homework.config_fields(classes["ORPO"])  # ORPO keeps it (encoder-decoders)
    report = {"per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "gradient_accumulation_steps": 4,
              "learning_rate": 5e-6, "max_steps": -1, "num_train_epochs": 1, "optim": "paged_adamw_8bit",
              "weight_decay": 0.0, "max_grad_norm": 0.0, "warmup_steps": 0, "max_length": 512, "seed": 2024}
    plan = homework.report_plan()
    assert plan == {"DPO": {**report, "beta": (0.1, 0.2)}, "ORPO": {**report, "beta": 0.1}}
    assert {model_id for _, model_id, _ in homework.REPORT_MODELS} == {"unsloth/gemma-2b-bnb-4bit",
                                                                       "unsloth/tinyllama-bnb-4bit"}


@pytest.mark.parametrize("name", ["cpu", "t4-sim", "l4-sim"])
def test_part_3_checks_the_configs_against_the_stated_plan(name):
    """Configs built from the profile's plan and from the report's pass (with the profile's precision); a config
    that leaves the stated plan fails and names the setting, its value and the plan's."""
    profile = PROFILES[name]
    for plan in (homework.plan_from_profile(profile), homework.report_plan()):
        homework.check_part_3(*plan_builders(profile, plan), profile, "none", plan)
    homework.check_part_3(*plan_builders(profile, homework.plan_from_profile(profile)), profile, "none")  # default
    report = homework.report_plan()
    other_rate = {**report, "ORPO": {**report["ORPO"], "learning_rate": 1e-5}}
    with pytest.raises(AssertionError, match=r"Part 3, ORPO: learning_rate is 1e-05, the plan says 5e-06"):
        homework.check_part_3(*plan_builders(profile, other_rate), profile, "none", report)
    with pytest.raises(AssertionError, match=r"Part 3, DPO beta 0.1: max_steps is -1, the config's default, the "
                                             rf"plan says {profile.pref_steps}: build the config from the plan"):
        homework.check_part_3(*plan_builders(profile, report), profile, "none")  # the report's configs, no plan stated


def test_a_plan_with_a_removed_or_missing_setting_says_what_to_do():
    """The plan itself is checked first: a name TRL 1.16 dropped (with its replacement, or why there is none), a
    missing setting or run length, the 2024 meaning of max_steps=0, and precision that is not the profile's."""
    profile = PROFILES["cpu"]
    report = homework.report_plan()
    builders = plan_builders(profile, report)

    def changed(method, **settings):
        return {**report, method: {**report[method], **settings}}

    with pytest.raises(AssertionError, match=r"DPO plan names settings that DPOConfig \(TRL 1\.16\.0\) does not "
                                             r"have\. 'max_prompt_length': TRL 1\.16 has no prompt-only limit.*fit "
                                             r"max_length"):
        homework.check_part_3(*builders, profile, "none", changed("DPO", max_prompt_length=256))
    with pytest.raises(AssertionError, match=r"'warmup_ratio': transformers 5 removed it\. warmup_steps takes a ratio"):
        homework.check_part_3(*builders, profile, "none", changed("ORPO", warmup_ratio=0.0))
    with pytest.raises(AssertionError, match=r"'num_epochs': did you mean 'num_train_epochs'\?"):
        homework.check_plan(changed("ORPO", num_epochs=1), profile)
    without_seed = {**report, "DPO": {k: v for k, v in report["DPO"].items() if k != "seed"}}
    with pytest.raises(AssertionError, match="Part 3, the DPO plan does not state seed"):
        homework.check_part_3(*builders, profile, "none", without_seed)
    no_length = {**report, "ORPO": {k: v for k, v in report["ORPO"].items() if k not in ("max_steps",
                                                                                          "num_train_epochs")}}
    with pytest.raises(AssertionError, match="Part 3, the ORPO plan states no run length"):
        homework.check_plan(no_length, profile)
    with pytest.raises(AssertionError, match=r"sets max_steps=0\. In the 2024 scripts .* State max_steps=-1"):
        homework.check_plan(changed("DPO", max_steps=0), profile)
    with pytest.raises(AssertionError, match=r"sets bf16=True, but profile 't4' trains in float16 \(a T4 has no "
                                             r"bfloat16\).*precision comes from the profile"):
        homework.check_plan(changed("DPO", bf16=True), PROFILES["t4"])
    with pytest.raises(AssertionError, match=r"sets run_name: leave it out of the plan"):
        homework.check_plan(changed("ORPO", run_name="orpo"), profile)
    with pytest.raises(AssertionError, match=r"DPO plan: beta is the beta sweep, a tuple"):
        homework.check_plan(changed("DPO", beta=0.1), profile)
    with pytest.raises(AssertionError, match=r"DPO plan does not make a DPOConfig: paged_adam is not a valid"):
        homework.check_plan(changed("DPO", optim="paged_adam"), profile)


def test_the_solution_states_a_plan_and_checks_part_3_against_the_report(monkeypatch):
    """Part 3's cells of the solution (the plan, the configs, both checks: configs only, nothing trains) pass on
    each profile the tests run it under, and a changed plan gets a checkpoint folder of its own."""
    import pandas as pd
    from trl import DPOConfig
    from trl.experimental.orpo import ORPOConfig

    import helpers

    monkeypatch.setenv("COURSE_WANDB", "off")  # report_to "none": nothing set up, nothing written
    cells = nbformat.read(make_homework.SOLUTION, as_version=4).cells
    starts = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown" and cell.source.startswith("## Part")]
    part_3 = next(i for i in starts if cells[i].source.startswith("## Part 3"))
    part_4 = next(i for i in starts if cells[i].source.startswith("## Part 4"))
    code = [cell.source for cell in cells[part_3:part_4] if cell.cell_type == "code"]
    assert any("homework.report_plan()" in source and "check_part_3(" in source for source in code)
    folders = set()
    for name in ("cpu", "t4-sim", "l4-sim"):
        namespace = {"profile": PROFILES[name], "helpers": helpers, "homework": homework, "pd": pd,
                     "DPOConfig": DPOConfig, "ORPOConfig": ORPOConfig}
        for source in code:
            exec(source, namespace)
        assert namespace["stated_plan"] == homework.plan_from_profile(PROFILES[name])
        folders.add(namespace["CHECKPOINTS"].name)
    assert homework.plan_tag(homework.report_plan()) not in folders


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


@pytest.mark.notebooks
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
