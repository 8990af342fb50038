"""Checks for the DPO-vs-ORPO homework (homework/dpo_orpo.ipynb). Each `check_part_N` raises `NotDoneYet` when the
student's cell still returns its placeholder, an AssertionError that says what is wrong, or prints what passed.

The quiz (Part 1) is formative: its answers are stored as hashes, so reading this file does not show them at a
glance, but the answer spaces are small enough to brute-force, which is why the rubric gives it no points.

Part 3 checks the configs against a stated plan: the profile's settings (`plan_from_profile`), the 2024 report's that
the assignment comes from (`report_plan`, mapped to TRL 1.16 names in `REPORT_SETTINGS`), or the student's own.
"""

import dataclasses
import difflib
import hashlib
import json
import math
import re
import warnings
from importlib.metadata import version
from typing import NamedTuple

import torch

from . import losses

TRL_CURVES = {  # the W&B curves each trainer logs (TRL's names) that the homework asks for
    "DPO": ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"),
    "ORPO": ("loss", "nll_loss", "log_odds_chosen", "log_odds_ratio"),
}
QUIZ = {  # question -> sha256 of the normalised answer
    "dpo_needs_reference_model": "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b",
    "orpo_needs_reference_model": "fcbcf165908dd18a9e49f7ff27810176db8e9f63b4352213741664245224f8aa",
    "orpo_compares_the": "1fd5faa9b5cf91c2156a98a00334f063f87954b7f6b3404fdcb7a1d86e6bd8cd",
    "larger_dpo_beta_keeps_the_policy": "be98c6532c0d6a26d7c9e3e15d148ffa35f558afd9f24a3c643ce9a07b791bba",
    "lora_params_576x576_rank_8": "1b21182d31e4941b4dcd2ba3e83f5970ded2005027f8bf0d13c563743b9b6756",
    "copies_of_the_weights_for_dpo_with_lora": "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",
}


class NotDoneYet(AssertionError):
    """A part still holds its placeholder."""


# ----------------------------------------------------------------------------------------------- Part 3: the plan
# A plan states the settings every run trains with: {"DPO": {field: value}, "ORPO": {field: value}}, the fields named
# as TRL 1.16's DPOConfig and ORPOConfig name them. DPO's "beta" is the beta sweep (one run per value), ORPO's "beta"
# is ORPO's lambda. Part 3 checks that the built configs hold every stated setting.
DPO_BETAS = (0.1, 0.2)  # the assignment's beta sweep
REQUIRED = ("per_device_train_batch_size", "learning_rate", "max_length", "seed", "beta")  # plus a run length
NOT_PLANNED = {  # config fields Part 3 sets by its own rules, never from a plan -> why
    "bf16": "precision comes from the profile", "fp16": "precision comes from the profile",
    "use_cpu": "the profile says where the runs train",
    "logging_steps": "it is always 1, one point per step in the curves",
    "report_to": "it is always helpers.report_to(), so the curves reach W&B",
    "run_name": "each run has its own: build it from the label (and beta) in dpo_config/orpo_config",
    "output_dir": "each run has its own: build it from the label (and beta) under CHECKPOINTS",
}
GONE = {  # names the 2024 scripts used -> (the plans whose config lacks it in TRL 1.16 / transformers 5.23, what to do)
    "max_prompt_length": (("DPO", "ORPO"), "TRL 1.16 has no prompt-only limit. DPOConfig and ORPOConfig keep the "
                          "whole prompt and cut the answer so that prompt + answer fit max_length (DPOTrainer drops "
                          "pairs whose prompt alone fills max_length). Leave it out of the plan; to cap prompts, "
                          "shorten them in the data"),
    "max_completion_length": (("DPO",), "DPOConfig 1.16 has no answer-only limit: max_length caps prompt + answer "
                              "(ORPOConfig's max_completion_length is for encoder-decoder models only)"),
    "warmup_ratio": (("DPO", "ORPO"), "transformers 5 removed it. warmup_steps takes a ratio as a float below 1 "
                     "(warmup_steps=0.1 warms up over a tenth of the steps); 0 is no warmup"),
    "evaluation_strategy": (("DPO", "ORPO"), "transformers renamed it eval_strategy"),
}


class Setting(NamedTuple):
    """One base setting of the 2024 report and its TRL 1.16 counterpart: `trl_name` None where none exists;
    `configs` lists the plans (DPO, ORPO) that state it."""
    report_setting: str
    report_value: object
    trl_name: str | None
    value: object
    configs: tuple
    note: str


BOTH = ("DPO", "ORPO")
REPORT_SETTINGS = (  # checked against the installed trl 1.16.0 and transformers 5.23.0 sources
    Setting("GPU", "L4 (Colab Pro)", None, "the profile's precision (l4: bf16=True)", (),
            "Not a plan field: Part 3 takes bf16, fp16 and use_cpu from the profile. The report names no precision; "
            "an L4 has bfloat16, a T4 would train the same plan in float16."),
    Setting("Model", "unsloth/gemma-2b-bnb-4bit; experiment 2: unsloth/tinyllama-bnb-4bit", None,
            "homework.REPORT_MODELS", (),
            "Not a config field: the model the trainer gets, quantized to 4 bits with bitsandbytes (the -bnb-4bit "
            "of their names). REPORT_MODELS lists both for profile.homework_models (not tried by the course: they "
            "need the Hub)."),
    Setting("Batch size", 2, "per_device_train_batch_size", 2, BOTH,
            "Pairs per batch; each pair is a chosen and a rejected sequence."),
    Setting("Eval batch size", 2, "per_device_eval_batch_size", 2, BOTH,
            "Used by trainer.evaluate(); the homework scores held-out pairs with its own preference_accuracy, so "
            "here it changes nothing."),
    Setting("Gradient accumulation steps", 4, "gradient_accumulation_steps", 4, BOTH,
            "One optimizer step per 4 batches: 8 pairs a step."),
    Setting("Learning rate", 5e-6, "learning_rate", 5e-6, BOTH,
            "DPOConfig's and ORPOConfig's default is 1e-6 (TrainingArguments' 5e-5)."),
    Setting("Max steps", 0, "max_steps", -1, BOTH,
            "In the transformers 4 Trainer of 2024 any max_steps <= 0 meant 'train num_train_epochs'. In "
            "transformers 5.23 only a negative one does (Trainer.set_initial_training_values: epoch_based = "
            "max_steps < 0): 0 is a budget of 0 steps, and the run stops after its first optimizer step. -1 is the "
            "default."),
    Setting("Num epoch", 1, "num_train_epochs", 1, BOTH,
            "TrainingArguments' default is 3. One pass over train_pairs (profile.orpo_steps x "
            "profile.pref_batch_size pairs): on the l4 profile 480 pairs, 60 optimizer steps of 8 pairs."),
    Setting("Optimizer", "paged adamw 8bit", "optim", "paged_adamw_8bit", BOTH,
            "A valid OptimizerNames value in transformers 5.23: bitsandbytes' 8-bit AdamW with is_paged=True, "
            "the same as the t4 and l4 profiles' profile.optim."),
    Setting("Weight decay", 0, "weight_decay", 0.0, BOTH, "The default in transformers 5.23."),
    Setting("Max grad norm", 0, "max_grad_norm", 0.0, BOTH,
            "transformers 5.23 clips gradients only when max_grad_norm > 0: 0 turns clipping off (the default "
            "is 1.0)."),
    Setting("Warm up ratio", 0, "warmup_steps", 0, BOTH,
            "warmup_ratio is gone from TrainingArguments in transformers 5.23 (passing it raises a TypeError); "
            "warmup_steps takes a ratio as a float below 1. 0, the default, is no warmup."),
    Setting("Beta", "0.1; experiment 1: 0.1 / 0.2", "beta", DPO_BETAS, ("DPO",),
            "DPOConfig.beta, one run per value: experiment 1's sweep, the assignment's too. The default is 0.1."),
    Setting("Beta", 0.1, "beta", 0.1, ("ORPO",),
            "ORPOConfig.beta is ORPO's lambda, the weight of the odds-ratio term. The report lists one beta; this "
            "plan gives ORPO the same 0.1, which is also ORPOConfig's default."),
    Setting("Max length", 512, "max_length", 512, BOTH,
            "Prompt + answer tokens, in both configs (the default is 1024)."),
    Setting("Max prompt length", 256, None, None, (),
            "Gone: neither DPOConfig 1.16 nor ORPOConfig has max_prompt_length (passing it raises a TypeError). "
            "Both keep the whole prompt and cut the answer so that prompt + answer fit max_length; DPOTrainer drops "
            "pairs whose prompt alone fills max_length. To cap prompts at 256 tokens, shorten them in the data."),
    Setting("Seed", 2024, "seed", 2024, BOTH, "The default is 42; the trainer seeds with it when it is built."),
    Setting("(no scheduler named)", None, "lr_scheduler_type", "linear (the default, not in the plan)", (),
            "The report names no scheduler, so its plan leaves lr_scheduler_type out and TrainingArguments' "
            "default applies. The profile's plan states 'constant'."),
)
REPORT_MODELS = (  # (label, model id, load in 4-bit) for profile.homework_models. The checkpoints are 4-bit already
    # and carry their bitsandbytes settings, so the notebook's load_model adds none (not tried here: no Hub)
    ("Gemma 2B in 4-bit", "unsloth/gemma-2b-bnb-4bit", False),
    ("TinyLlama 1.1B in 4-bit", "unsloth/tinyllama-bnb-4bit", False),
)


def plan_from_profile(profile) -> dict:
    """The default plan: the profile's steps, batch size, learning rates, max_length and ORPO lambda, a constant
    learning rate, seed 0 and the assignment's beta sweep for DPO (what Part 3 has always checked)."""
    common = {"per_device_train_batch_size": profile.pref_batch_size, "lr_scheduler_type": "constant",
              "max_length": profile.max_length, "seed": 0}
    return {"DPO": {"max_steps": profile.pref_steps, "learning_rate": profile.pref_learning_rate, **common,
                    "beta": DPO_BETAS},
            "ORPO": {"max_steps": profile.orpo_steps, "learning_rate": profile.orpo_learning_rate, **common,
                     "beta": profile.orpo_beta}}


def report_plan() -> dict:
    """The 2024 report's base settings as a plan: the TRL 1.16 names and values of REPORT_SETTINGS."""
    plan = {"DPO": {}, "ORPO": {}}
    for setting in REPORT_SETTINGS:
        for method in setting.configs:
            plan[method][setting.trl_name] = setting.value
    return plan


def plan_tag(plan: dict) -> str:
    """A short name for a plan (a hash of its settings), so that runs of different plans keep their checkpoints
    apart: a run never resumes from another plan's checkpoint."""
    text = json.dumps(plan, sort_keys=True, default=str)
    return "plan-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def config_classes() -> dict:
    """The config class each plan is for."""
    from trl import DPOConfig
    from trl.experimental.orpo import ORPOConfig

    return {"DPO": DPOConfig, "ORPO": ORPOConfig}


def config_fields(config_class) -> set:
    """The field names a config class takes."""
    return {field.name for field in dataclasses.fields(config_class) if field.init}


def check_plan(plan, profile) -> None:
    """A stated plan: for DPO and ORPO, real fields of TRL's configs, the REQUIRED ones and a run length, nothing
    that Part 3 sets by its own rules (precision from the profile, logging, names), and values that build a config."""
    assert isinstance(plan, dict) and set(plan) == {"DPO", "ORPO"} and all(
        isinstance(settings, dict) for settings in plan.values()), (
        "Part 3: a plan is a dict {'DPO': {field: value, ...}, 'ORPO': {field: value, ...}} of DPOConfig and "
        "ORPOConfig settings; homework.plan_from_profile(profile) and homework.report_plan() make one")
    for method, config_class in config_classes().items():
        where, settings = f"Part 3, the {method} plan", plan[method]
        _check_names(where, method, settings, config_class)
        _check_not_planned(where, settings, profile)
        _check_required(where, method, settings)
        _check_builds(where, method, settings, config_class)


def _check_names(where, method, settings, config_class) -> None:
    fields, problems = config_fields(config_class), []
    for name in settings:
        if name in fields:
            continue
        gone = GONE.get(name)
        if gone and method in gone[0]:
            hint = gone[1]
        else:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"see {config_class.__name__}'s fields"
        problems.append(f"{name!r}: {hint}")
    assert not problems, (f"{where} names settings that {config_class.__name__} (TRL {version('trl')}) does not "
                          "have. " + "; ".join(problems))


def _check_not_planned(where, settings, profile) -> None:
    for name in settings:
        if name in ("bf16", "fp16", "use_cpu") and settings[name] != getattr(profile, name):
            why = " (a T4 has no bfloat16)" if profile.fp16 else ""
            raise AssertionError(
                f"{where} sets {name}={settings[name]!r}, but profile {profile.name!r} trains in "
                f"{profile.dtype_name}{why} with use_cpu={profile.use_cpu}: precision comes from the profile. Leave "
                "bf16, fp16 and use_cpu out of the plan.")
        assert name not in NOT_PLANNED, f"{where} sets {name}: leave it out of the plan, {NOT_PLANNED.get(name)}"


def _check_required(where, method, settings) -> None:
    missing = [name for name in REQUIRED if name not in settings]
    assert not missing, (
        f"{where} does not state {', '.join(missing)}. Say what the runs train with: a setting left out takes "
        "TRL's default, tuned for other setups (homework.plan_from_profile(profile) has the profile's values)")
    steps = settings.get("max_steps", -1)
    assert isinstance(steps, int) and not isinstance(steps, bool), \
        f"{where}: max_steps is a whole number, not {steps!r}"
    assert steps != 0, (
        f"{where} sets max_steps=0. In the 2024 scripts (transformers 4) 0 meant 'train num_train_epochs'; in "
        "transformers 5 only a negative max_steps does, and 0 is a budget of 0 steps. State max_steps=-1 (or leave "
        "it out) with num_train_epochs, or a positive max_steps")
    assert steps > 0 or "num_train_epochs" in settings, (
        f"{where} states no run length: a positive max_steps, or num_train_epochs (max_steps left out or -1)")
    beta = settings["beta"]
    if method == "DPO":
        assert isinstance(beta, (tuple, list)) and beta and all(_is_number(b) for b in beta), (
            f"{where}: beta is the beta sweep, a tuple of betas with one run each, such as {DPO_BETAS}, not {beta!r}")
    else:
        assert _is_number(beta), f"{where}: beta is ORPO's lambda, one number (such as 0.1), not {beta!r}"


def _check_builds(where, method, settings, config_class) -> None:
    one = {**settings, "beta": settings["beta"][0]} if method == "DPO" else settings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the student's own configs show TRL's warnings
            # float32 on the CPU, which every machine builds: precision is the profile's, checked on the configs
            config_class(output_dir="plan-check", use_cpu=True, bf16=False, fp16=False, report_to="none", **one)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{where} does not make a {config_class.__name__}: {error}") from error


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(got, want) -> bool:
    """A config's value equals a plan's: enums by their value, a single value as a one-item list, floats close."""
    got, want = getattr(got, "value", got), getattr(want, "value", want)
    if isinstance(got, (list, tuple)) or isinstance(want, (list, tuple)):
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        want = list(want) if isinstance(want, (list, tuple)) else [want]
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    if _is_number(got) and _is_number(want):
        return math.isclose(got, want, rel_tol=1e-9)
    return got == want


def _differs(where, method, name, got, want, config_class) -> str:
    """What is wrong with one setting of a built config, and what to do."""
    shown = getattr(got, "value", got)
    field = config_class.__dataclass_fields__.get(name)
    if field is not None and field.default is not dataclasses.MISSING and _same(field.default, got):
        shown = f"{shown!r}, the config's default"
    else:
        shown = repr(shown)
    if method == "DPO" and name == "beta":
        return f"{where}: beta is {shown}; pass the function's beta argument ({want}) to DPOConfig"
    label = " (ORPO's lambda)" if (method, name) == ("ORPO", "beta") else ""
    why = " (with another rate the runs of Part 4 may not learn)" if name == "learning_rate" else ""
    return f"{where}: {name}{label} is {shown}, the plan says {want!r}: build the config from the plan{why}"


def _not_done(part: int, what: str) -> NotDoneYet:
    return NotDoneYet(f"Part {part} is not done yet: {what}. Fill in the cells marked YOUR CODE HERE above, then "
                      "re-run them and this check.")


def _normalise(answer) -> str:
    if isinstance(answer, bool):
        return str(answer).lower()
    if isinstance(answer, (int, float)):
        return str(int(answer)) if float(answer).is_integer() else str(answer)
    return str(answer).strip().lower()


def answer_hash(answer) -> str:
    return hashlib.sha256(_normalise(answer).encode()).hexdigest()


def check_part_1(answers: dict) -> None:
    """The concept quiz: every key answered, and right."""
    missing = [question for question in QUIZ if answers.get(question) is None]
    if missing:
        raise _not_done(1, f"no answer yet for {missing}")
    wrong = [question for question, digest in QUIZ.items() if answer_hash(answers[question]) != digest]
    assert not wrong, f"Part 1: not right yet: {wrong}. Re-read the notebook sections named in each question."
    print(f"Part 1: all {len(QUIZ)} answers right.")


def check_part_2(dpo_loss, log_odds_ratio) -> None:
    """The DPO loss (with its implicit rewards) and ORPO's log odds ratio, against the course's tested versions."""
    generator = torch.Generator().manual_seed(0)
    logps = [-torch.rand(8, generator=generator) * 40 - 1 for _ in range(4)]  # summed log-probs, all below 0
    got = dpo_loss(*logps, beta=0.1)
    if got is None:
        raise _not_done(2, "dpo_loss returns None")
    want = losses.dpo_loss(*logps, beta=0.1)
    assert isinstance(got, tuple) and len(got) == 3, "Part 2: dpo_loss returns (losses, chosen_rewards, rejected_rewards)"
    for name, mine, theirs in zip(("losses", "chosen_rewards", "rejected_rewards"), got, want):
        assert mine.shape == theirs.shape, f"Part 2: dpo_loss's {name} should have shape {tuple(theirs.shape)} " \
                                           f"(one per pair), not {tuple(mine.shape)}"
        torch.testing.assert_close(mine.float(), theirs, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"Part 2: dpo_loss's {name} are off: {m}")
    average = [-torch.rand(8, generator=generator) * 3 - 0.01 for _ in range(2)]  # per-token averages, below 0
    got = log_odds_ratio(*average)
    if got is None:
        raise _not_done(2, "log_odds_ratio returns None")
    _, want = losses.orpo_loss(*average)
    torch.testing.assert_close(torch.as_tensor(got).float(), want, rtol=1e-4, atol=1e-5,
                               msg=lambda m: f"Part 2: log_odds_ratio is off: {m}. Odds are p / (1 - p).")
    print("Part 2: dpo_loss and log_odds_ratio equal the reference implementations.")


def check_part_3(dpo_config, orpo_config, profile, report_to: str, plan: dict | None = None) -> None:
    """The trainer configs: every setting of the stated plan (default: plan_from_profile(profile)) in the configs
    built for it, and the rules that make the runs logged and right for the hardware: precision from the profile,
    one point per step to W&B, a name and a folder of its own for every run."""
    plan = plan_from_profile(profile) if plan is None else plan
    check_plan(plan, profile)
    classes = config_classes()
    made = {("DPO", beta): dpo_config("model A", beta) for beta in plan["DPO"]["beta"]}
    made[("ORPO", None)] = orpo_config("model A")
    if any(config is None for config in made.values()):
        raise _not_done(3, "dpo_config or orpo_config returns None")
    for (method, beta), config in made.items():
        where = f"Part 3, {method}" + (f" beta {beta}" if beta is not None else "")
        assert isinstance(config, classes[method]), f"{where}: build a {classes[method].__name__}"
        assert config.logging_steps == 1, f"{where}: logging_steps=1, or the curves have too few points to read"
        assert config.report_to == [report_to] or (report_to == "none" and not config.report_to), \
            f"{where}: report_to should be helpers.report_to() ({report_to!r}) so the curves reach W&B"
        assert config.use_cpu == profile.use_cpu, f"{where}: use_cpu should be profile.use_cpu"
        assert (config.bf16, config.fp16) == (profile.bf16, profile.fp16), \
            f"{where}: bf16/fp16 should follow the profile (a T4 has no bfloat16)"
        for name, want in plan[method].items():
            want = beta if (method, name) == ("DPO", "beta") else want
            got = getattr(config, name)
            assert _same(got, want), _differs(where, method, name, got, want, classes[method])
    names = {config.run_name for config in made.values()}
    folders = {config.output_dir for config in made.values()}
    other_model = dpo_config("model B", plan["DPO"]["beta"][0])
    assert len(names) == len(made) and other_model.run_name not in names, \
        "Part 3: give each run its own run_name (method, model and beta in it), or W&B mixes their curves"
    assert len(folders) == len(made) and other_model.output_dir not in folders, \
        "Part 3: give each run its own output_dir, or one run resumes from another's checkpoint"
    print("Part 3: both configs are right: they hold every setting of the plan.")


def check_part_4(results: dict, methods: dict, expect_gain: bool = True) -> None:
    """Every planned run trained, logged the curves W&B shows, and moved the held-out preference accuracy up
    (unless `expect_gain` is False: a profile whose runs are too short to learn, profile.effects_meaningful)."""
    if not results:
        raise _not_done(4, "`results` is empty: make_trainer() has not returned a trainer yet")
    missing = [run for run in methods if run not in results]
    assert not missing, f"Part 4: these runs are missing: {missing}"
    for run, method in methods.items():
        history = results[run]["history"]
        for key in TRL_CURVES[method]:
            assert any(key in entry for entry in history), f"Part 4, {run}: the log has no {key!r}"
        assert results[run].get("lora", True), (
            f"Part 4, {run}: the trainer trained every weight; pass peft_config=lora_config to the trainer (LoRA)")
        before, after = results[run]["before"], results[run]["after"]
        # a rise, measured against the headroom: a model that starts at 1.0 can only stay there
        rose = after > before if before < 1.0 else after >= before
        assert rose or not expect_gain, (
            f"Part 4, {run}: held-out preference accuracy did not rise ({before:.2f} -> {after:.2f}); check the "
            "learning rate and steps in your config")
    gain = "held-out preference accuracy rose in each" if expect_gain else "(too few steps here to ask for a gain)"
    print(f"Part 4: {len(methods)} runs trained; {gain}.")


def check_part_5(figure, results: dict, methods: dict) -> None:
    """The curves figure: one panel per W&B curve, one line per run, drawn from the logged values."""
    if figure is None:
        raise _not_done(5, "plot_curves returns None")
    titles = [ax.get_title() for ax in figure.axes]
    words = [set(re.split(r"[\s,;:()\[\]|]+", title)) for title in titles]  # a whole word, not a substring
    for key in sorted({key for m in methods.values() for key in TRL_CURVES[m]}):
        assert any(key in w for w in words), f"Part 5: no panel titled with {key!r} (panel titles: {titles})"
    drawn = [tuple(line.get_ydata()) for ax in figure.axes for line in ax.get_lines()]
    for run, method in methods.items():
        key = TRL_CURVES[method][-1]
        logged = tuple(entry[key] for entry in results[run]["history"] if key in entry)
        assert any(len(line) == len(logged) and all(abs(a - b) < 1e-9 for a, b in zip(line, logged))
                   for line in drawn), f"Part 5: no line shows {run}'s logged {key!r}"
    print("Part 5: every curve is there, for every run.")


def check_part_6(summary, results: dict) -> None:
    """The results table: one row per run, the numbers taken from `results`."""
    if summary is None:
        raise _not_done(6, "results_table returns None")
    missing = [run for run in results if run not in summary.index]
    assert not missing, f"Part 6: rows missing: {missing} (index the table by run name)"
    for run, result in results.items():
        for column in ("before", "after", "seconds"):
            assert column in summary.columns, f"Part 6: a column {column!r} is missing"
            assert abs(float(summary.loc[run, column]) - result[column]) < 1e-6, \
                f"Part 6, {run}: {column} is {summary.loc[run, column]}, results say {result[column]}"
        key = "rewards/margins" if "DPO" in run else "log_odds_chosen"
        final = [entry[key] for entry in result["history"] if key in entry][-1]
        assert "final margin or log odds" in summary.columns, "Part 6: a column 'final margin or log odds' is missing"
        assert abs(float(summary.loc[run, "final margin or log odds"]) - final) < 1e-6, \
            f"Part 6, {run}: the final {key} is {final}"
    print("Part 6: the table matches the runs.")
