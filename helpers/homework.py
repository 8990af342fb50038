"""Checks for the DPO-vs-ORPO homework (homework/dpo_orpo.ipynb). Each `check_part_N` raises `NotDoneYet` when the
student's cell still returns its placeholder, an AssertionError that says what is wrong, or prints what passed.

The quiz (Part 1) is formative: its answers are stored as hashes, so reading this file does not show them at a
glance, but the answer spaces are small enough to brute-force, which is why the rubric gives it no points.
"""

import hashlib
import re

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


def check_part_3(dpo_config, orpo_config, profile, report_to: str) -> None:
    """The trainer configs: the settings that make the runs comparable, logged and right for the hardware."""
    from trl import DPOConfig
    from trl.experimental.orpo import ORPOConfig

    made = {("DPO", beta): dpo_config("model A", beta) for beta in (0.1, 0.2)}
    made[("ORPO", None)] = orpo_config("model A")
    if any(config is None for config in made.values()):
        raise _not_done(3, "dpo_config or orpo_config returns None")
    for (method, beta), config in made.items():
        where = f"Part 3, {method}" + (f" beta {beta}" if beta else "")
        assert isinstance(config, DPOConfig if method == "DPO" else ORPOConfig), \
            f"{where}: build a {'DPOConfig' if method == 'DPO' else 'ORPOConfig'}"
        if beta is not None:
            assert config.beta == beta, f"{where}: beta is {config.beta}"
        steps = profile.pref_steps if method == "DPO" else profile.orpo_steps
        assert config.max_steps == steps, f"{where}: max_steps should be the profile's ({steps}), not {config.max_steps}"
        assert config.per_device_train_batch_size == profile.pref_batch_size, \
            f"{where}: per_device_train_batch_size should be profile.pref_batch_size"
        assert config.logging_steps == 1, f"{where}: logging_steps=1, or the curves have too few points to read"
        assert config.report_to == [report_to] or (report_to == "none" and not config.report_to), \
            f"{where}: report_to should be helpers.report_to() ({report_to!r}) so the curves reach W&B"
        assert config.use_cpu == profile.use_cpu, f"{where}: use_cpu should be profile.use_cpu"
        assert (config.bf16, config.fp16) == (profile.bf16, profile.fp16), \
            f"{where}: bf16/fp16 should follow the profile (a T4 has no bfloat16)"
        assert config.seed == 0, f"{where}: seed=0, so reruns give the same curves"
        rate = profile.pref_learning_rate if method == "DPO" else profile.orpo_learning_rate
        assert config.learning_rate == rate, (
            f"{where}: learning_rate should be the profile's ({rate}), not {config.learning_rate} (TRL's default "
            "is tuned for other setups; with it the runs of Part 4 may not learn)")
        assert str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type)) == "constant", \
            f"{where}: lr_scheduler_type='constant' (a short run should not spend its steps decaying)"
        assert config.max_length == profile.max_length, \
            f"{where}: max_length should be profile.max_length ({profile.max_length}), not {config.max_length}"
        if method == "ORPO":
            assert config.beta == profile.orpo_beta, \
                f"{where}: beta (ORPO's lambda) should be profile.orpo_beta ({profile.orpo_beta}), not {config.beta}"
    names = {config.run_name for config in made.values()}
    folders = {config.output_dir for config in made.values()}
    other_model = dpo_config("model B", 0.1)
    assert len(names) == 3 and other_model.run_name not in names, \
        "Part 3: give each run its own run_name (method, model and beta in it), or W&B mixes their curves"
    assert len(folders) == 3 and other_model.output_dir not in folders, \
        "Part 3: give each run its own output_dir, or one run resumes from another's checkpoint"
    print("Part 3: both configs are right.")


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
