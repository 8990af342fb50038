"""Every exercise checker (helpers/exercises.py) against a right answer, the empty cell a student starts from, and
typical wrong answers: a right answer passes, the empty cell says "not done yet", a wrong one fails with a message
that says what differs. The right answers are the teacher's solutions (teacher/solutions.py), which
scripts/make_teacher.py also pastes into the teacher's notebooks (teacher/NN_*.ipynb)."""
import ast
import builtins
import inspect
import re
import sys
from types import SimpleNamespace
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import helpers
from helpers import exercises, nf4

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_teacher  # noqa: E402

solutions = make_teacher.solutions()  # teacher/solutions.py: the right answers, one source for tests and notebooks
solution = solutions.solution


def not_done(*args, **kwargs):
    raise NotImplementedError("YOUR CODE HERE")


def passes(check, fn, *args, capsys=None, **kwargs):
    assert check(fn, *args, **kwargs) is True
    if capsys is not None:
        assert "correct!" in capsys.readouterr().out


def waits(check, *args, capsys, **kwargs):
    """The empty cell: no error, a "not done yet" that names the function to fill in."""
    def count_trained_tokens(*a, **k):  # the name the message must show
        raise NotImplementedError("YOUR CODE HERE")
    assert check(count_trained_tokens, *args, **kwargs) is False
    assert re.search(r"Exercise \d: not done yet\. Fill in count_trained_tokens, then re-run this cell\.",
                     capsys.readouterr().out)


# 01 -------------------------------------------------------------------------------------------------------------
def test_trained_tokens(capsys):
    dataset = [{"labels": [-100, -100, 5, 6, 7]}, {"labels": [-100, 8, 9]}, {"labels": [1, 2, -100]}]
    passes(exercises.check_trained_tokens, solution("count_trained_tokens"), dataset, capsys=capsys)
    waits(exercises.check_trained_tokens, dataset, capsys=capsys)
    with pytest.raises(AssertionError, match="example 0: your function says 5, the trainer's labels say 3"):
        exercises.check_trained_tokens(len, dataset)  # every position, prompt included


# 02 -------------------------------------------------------------------------------------------------------------
def test_lora_param_count(capsys):
    passes(exercises.check_lora_param_count, solution("lora_param_count"), capsys=capsys)
    waits(exercises.check_lora_param_count, capsys=capsys)
    with pytest.raises(AssertionError, match=r"\(576, 576, r=8\): you say 4608, the layer has 9216"):
        exercises.check_lora_param_count(lambda d_in, d_out, r: r * d_in)  # A only
    with pytest.raises(AssertionError, match="the layer has"):
        exercises.check_lora_param_count(lambda d_in, d_out, r: d_in * d_out + r * (d_in + d_out))  # + the frozen W


def test_nf4_round(capsys):
    nf4_round = solution("nf4_round")

    def int4_round(values):  # evenly spaced levels: not NF4
        codes, absmax = nf4.quantize_blockwise(values, nf4.int4_codebook(), 64)
        return nf4.dequantize_blockwise(codes, absmax, nf4.int4_codebook(), values.shape, 64)

    # (64,) in, (64,) out, as the exercise asks; bitsandbytes' own dequantize_4bit gives (1, 64) on the CPU, and the
    # check that sat in notebook 02 compared with that shape: it refused this right answer
    passes(exercises.check_nf4_round, nf4_round, capsys=capsys)
    waits(exercises.check_nf4_round, capsys=capsys)
    with pytest.raises(AssertionError, match="not close"):
        exercises.check_nf4_round(int4_round)
    with pytest.raises(AssertionError, match="not close"):
        exercises.check_nf4_round(lambda values: values)  # no rounding at all
    with pytest.raises(AssertionError, match=r"return the 64 restored values as \(64,\), not \(2, 32\)"):
        exercises.check_nf4_round(lambda values: nf4_round(values).view(2, 32))


def test_level_usage(capsys):
    torch.manual_seed(0)
    weight = torch.randn(64, 128) * 0.02

    level_usage = solution("level_usage")

    assert exercises.check_level_usage(level_usage, weight, name="q_proj") is True
    assert "Exercise 3: correct! q_proj uses its levels" in capsys.readouterr().out
    waits(exercises.check_level_usage, weight, capsys=capsys)
    with pytest.raises(AssertionError, match="shares differ from bitsandbytes' codes"):
        exercises.check_level_usage(lambda w: torch.full((16,), 1 / 16), weight)  # "every level equally often"
    with pytest.raises(AssertionError, match="the shares should sum to 1"):
        exercises.check_level_usage(lambda w: level_usage(w) * w.numel(), weight)  # counts, not shares
    with pytest.raises(AssertionError, match="expected 16 shares"):
        exercises.check_level_usage(lambda w: level_usage(w)[:15], weight)


# 03 -------------------------------------------------------------------------------------------------------------
def test_fewest_params_within(capsys):
    table = pd.DataFrame({"held-out loss": [0.50, 0.52, 0.60, 0.90], "trainable params": [900, 300, 50, 10]},
                         index=["LoRA", "DoRA", "IA3", "prompt tuning"])

    passes(exercises.check_fewest_params_within, solution("fewest_params_within"), table, capsys=capsys)
    waits(exercises.check_fewest_params_within, table, capsys=capsys)
    with pytest.raises(AssertionError, match="tolerance 0.05: you say 'LoRA', the table says 'DoRA'"):
        exercises.check_fewest_params_within(lambda t, tolerance: t["held-out loss"].idxmin(), table)
    with pytest.raises(AssertionError, match="tolerance 0.0: you say 'prompt tuning', the table says 'LoRA'"):
        exercises.check_fewest_params_within(lambda t, tolerance: t["trainable params"].idxmin(), table)


# 04 -------------------------------------------------------------------------------------------------------------
def test_truncate_and_normalize(capsys):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(helpers.model_path("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    texts = ["The Zephy C5 costs 52 euros.", "A red kettle.", "Released in 2020.", "Battery life: 9 hours."]
    dims = (384, 128, 32)
    passes(exercises.check_truncate_and_normalize, solution("truncate_and_normalize"), model, texts, dims,
           capsys=capsys)
    waits(exercises.check_truncate_and_normalize, model, texts, dims, capsys=capsys)
    with pytest.raises(AssertionError, match="not close"):  # truncated, not re-normalized
        exercises.check_truncate_and_normalize(lambda emb, dim: emb[:, :dim], model, texts, dims)
    with pytest.raises(AssertionError, match="not close"):  # normalized first, then truncated
        exercises.check_truncate_and_normalize(lambda emb, dim: F.normalize(emb, dim=-1)[:, :dim], model, texts,
                                               dims)
    with pytest.raises(AssertionError, match="dim 128: shape"):
        exercises.check_truncate_and_normalize(lambda emb, dim: F.normalize(emb, dim=-1), model, texts, dims)


# 05 -------------------------------------------------------------------------------------------------------------
def test_accuracy_by_request(capsys):
    pairs = helpers.load_course_dataset("preferences")["test"].select(range(40))
    forms = [helpers.requested_form(p) for p in pairs["prompt"]]
    assert {"value", "sentence"} <= set(forms), "the check needs both kinds of request"

    def pair_accuracy(model, subset):  # a stand-in judge: prefers the shorter answer
        right = [len(c[0]["content"]) < len(r[0]["content"]) for c, r in zip(subset["chosen"], subset["rejected"])]
        return {"accuracy": sum(right) / len(right)}

    accuracy_by_request = solution("accuracy_by_request", pair_accuracy=pair_accuracy)

    passes(exercises.check_accuracy_by_request, accuracy_by_request, None, pairs, pair_accuracy, capsys=capsys)
    waits(exercises.check_accuracy_by_request, None, pairs, pair_accuracy, capsys=capsys)
    with pytest.raises(AssertionError, match="return a dict with the keys 'value' and 'sentence'"):
        exercises.check_accuracy_by_request(lambda m, s: pair_accuracy(m, s)["accuracy"], None, pairs, pair_accuracy)

    def by_substring(model, subset):  # the classic misreading: "no sentence" contains "sentence"
        def kind(p):
            return "sentence" if "sentence" in p["prompt"][-1]["content"] else "value"
        return {k: pair_accuracy(model, subset.filter(lambda p: kind(p) == k))["accuracy"]
                for k in ("value", "sentence")}

    assert by_substring(None, pairs) != accuracy_by_request(None, pairs), "pick pairs where the misreading shows"
    with pytest.raises(AssertionError, match=r"\(yours, expected\) per request"):
        exercises.check_accuracy_by_request(by_substring, None, pairs, pair_accuracy)


def test_fact_checked_reward(capsys):
    passes(exercises.check_fact_checked_reward, solution("fact_checked_reward"), capsys=capsys)
    waits(exercises.check_fact_checked_reward, capsys=capsys)
    with pytest.raises(AssertionError, match="not close"):
        exercises.check_fact_checked_reward(lambda scores, answers, facts: scores)
    with pytest.raises(AssertionError, match="not close"):  # a penalty for a missing fact, but the wrong size
        exercises.check_fact_checked_reward(
            lambda s, a, f: s - torch.tensor([float(x not in y) for y, x in zip(a, f)]))


def test_best_of_n_by_sampling(capsys):
    passes(exercises.check_best_of_n_by_sampling, solution("best_of_n_by_sampling"), capsys=capsys)
    waits(exercises.check_best_of_n_by_sampling, capsys=capsys)

    def lowest(scores, values, n, draws):  # keeps the lowest score instead of the highest
        return solution("best_of_n_by_sampling")(-scores, values, n, draws)

    with pytest.raises(AssertionError, match="best-of-3 of 8 answers per prompt, 4000 draws"):
        exercises.check_best_of_n_by_sampling(lowest)
    with pytest.raises(AssertionError, match="one value per prompt"):
        exercises.check_best_of_n_by_sampling(lambda scores, values, n, draws: values.mean())

    def with_repeats(scores, values, n, draws):  # draws n answers with replacement
        P, N = scores.shape
        picks = torch.randint(0, N, (draws, P, n))
        best = picks.gather(-1, scores.expand(draws, P, N).gather(-1, picks).argmax(-1, keepdim=True))
        return values.expand(draws, P, N).gather(-1, best).squeeze(-1).mean(0)

    with pytest.raises(AssertionError, match="draw without repeats"):
        exercises.check_best_of_n_by_sampling(with_repeats)


# 06 -------------------------------------------------------------------------------------------------------------
def test_implicit_margin(capsys):
    torch.manual_seed(0)
    policy = {"chosen": -torch.rand(8) * 20, "rejected": -torch.rand(8) * 20}
    reference = {"chosen": -torch.rand(8) * 20, "rejected": -torch.rand(8) * 20}

    passes(exercises.check_implicit_margin, solution("implicit_margin"), policy, reference, 0.1, capsys=capsys)
    waits(exercises.check_implicit_margin, policy, reference, 0.1, capsys=capsys)
    with pytest.raises(AssertionError, match="the implicit rewards give"):
        exercises.check_implicit_margin(lambda pc, pr, rc, rr, beta: ((pc - rc) - (pr - rr)).mean(), policy,
                                        reference, 0.1)  # beta forgotten
    with pytest.raises(AssertionError, match="the implicit rewards give"):
        exercises.check_implicit_margin(lambda pc, pr, rc, rr, beta: (beta * (pc - pr)).mean(), policy, reference,
                                        0.1)  # the reference forgotten


def test_closest_to_reference(capsys):
    results = {0.1: {"log_ratio_chosen": 0.5, "log_ratio_rejected": -3.0},
               0.2: {"log_ratio_chosen": -1.0, "log_ratio_rejected": -1.0},
               0.5: {"log_ratio_chosen": 0.2, "log_ratio_rejected": -2.5}}

    passes(exercises.check_closest_to_reference, solution("closest_to_reference"), results, capsys=capsys)
    waits(exercises.check_closest_to_reference, results, capsys=capsys)
    with pytest.raises(AssertionError, match="you say beta 0.5, the log-ratios say beta 0.2"):
        exercises.check_closest_to_reference(lambda r: max(r), results)  # "the largest beta stays closest"
    with pytest.raises(AssertionError, match="you say beta 0.5, the log-ratios say beta 0.2"):
        exercises.check_closest_to_reference(  # the chosen answers only
            lambda r: min(r, key=lambda b: abs(r[b]["log_ratio_chosen"])), results)


def test_kto_weights(capsys):
    rows = {"label": [True] * 6 + [False] * 6}
    passes(exercises.check_kto_weights, solution("kto_weights"), rows, capsys=capsys)
    waits(exercises.check_kto_weights, rows, capsys=capsys)
    with pytest.raises(AssertionError, match=r"3 desirable, 9 undesirable: your weights \(1.0, 1.0\) give a ratio"):
        exercises.check_kto_weights(lambda labels: (1.0, 1.0), rows)  # right only when the kinds are balanced
    swapped = r"3 desirable, 9 undesirable: your weights \(1.0, 3.0\) give a ratio of 0.111"
    with pytest.raises(AssertionError, match=swapped):
        exercises.check_kto_weights(lambda labels: tuple(reversed(solution("kto_weights")(labels))), rows)
    with pytest.raises(AssertionError, match="weights must be positive"):
        exercises.check_kto_weights(lambda labels: (0.0, 0.0), rows)


def _labelled_round():
    """Four hand-made pairs to "Just the value" prompts about a product made in Ghana: chosen better, chosen worse,
    a tie, chosen worse on the form alone."""
    prompt = [{"role": "user", "content": "The Pico K2 is made in Ghana.\nQuestion: Where is the Pico K2 made? "
                                          "Just the value, please."}]
    sides = [("Ghana", "The Pico K2 is made in Ghana."), ("Peru", "Ghana"), ("Kenya", "Peru"),
             ("It is made in Ghana.", "Ghana.")]
    pairs = [{"prompt": prompt, "chosen": [{"role": "assistant", "content": c}],
              "rejected": [{"role": "assistant", "content": r}]} for c, r in sides]
    rounds = {"reward model": [{"gold_agrees": 1, "gold_ties": 1, "gold_disagrees": 2}],
              "gold rule": [{"gold_agrees": 0, "gold_ties": 0, "gold_disagrees": 0}]}
    return {("reward model", 1): (pairs, ["Ghana"] * 4), ("gold rule", 1): ([], [])}, rounds


def test_gold_verdicts(capsys):
    labelled, rounds = _labelled_round()
    passes(exercises.check_gold_verdicts, solution("gold_verdicts"), labelled, rounds, capsys=capsys)
    assert solution("gold_verdicts")(*labelled[("reward model", 1)]) == [1, -1, 0, -1]
    waits(exercises.check_gold_verdicts, labelled, rounds, capsys=capsys)
    with pytest.raises(AssertionError, match="pair 0: your verdict is -1, the gold rule's is 1"):
        exercises.check_gold_verdicts(lambda pairs, facts: [-v for v in solution("gold_verdicts")(pairs, facts)],
                                      labelled, rounds)
    fact_only = lambda pairs, facts: [  # noqa: E731  (forgets the form: sees ties where the form decides)
        (c > r) - (c < r) for c, r in zip(helpers.correctness_reward([p["chosen"][0]["content"] for p in pairs], facts),
                                          helpers.correctness_reward([p["rejected"][0]["content"] for p in pairs], facts))]
    with pytest.raises(AssertionError, match="pair 0: your verdict is 0, the gold rule's is 1"):
        exercises.check_gold_verdicts(fact_only, labelled, rounds)


# 07 -------------------------------------------------------------------------------------------------------------
def test_log_odds_ratio(capsys):
    torch.manual_seed(0)
    chosen, rejected = -torch.rand(8) * 3 - 0.05, -torch.rand(8) * 3 - 0.05  # average log-probabilities (< 0)

    passes(exercises.check_log_odds_ratio, solution("log_odds_ratio"), chosen, rejected, capsys=capsys)
    waits(exercises.check_log_odds_ratio, chosen, rejected, capsys=capsys)
    with pytest.raises(AssertionError, match="your log odds ratios differ from losses.orpo_loss's"):
        exercises.check_log_odds_ratio(lambda c, r: c - r, chosen, rejected)  # log-probability ratio, not odds


def test_extra_push_on_rejected(capsys):
    results = {0.0: {"logp_rejected": -10.0}, 0.5: {"logp_rejected": -12.5}}
    passes(exercises.check_extra_push_on_rejected,
           solution("extra_push_on_rejected", profile=SimpleNamespace(orpo_beta=0.5)), results, 0.5, capsys=capsys)
    waits(exercises.check_extra_push_on_rejected, results, 0.5, capsys=capsys)
    with pytest.raises(AssertionError, match="you get -2.500, the table gives 2.500"):
        exercises.check_extra_push_on_rejected(lambda r: r[0.5]["logp_rejected"] - r[0.0]["logp_rejected"],
                                               results, 0.5)


# 08 -------------------------------------------------------------------------------------------------------------
def test_exact_reward(capsys):
    passes(exercises.check_exact_reward, solution("exact_reward"), capsys=capsys)
    waits(exercises.check_exact_reward, capsys=capsys)
    with pytest.raises(AssertionError, match=r"\('820', 0\.0, 1\.0\)"):  # a prefix, not a whole word
        exercises.check_exact_reward(lambda completions, answer, **kw: [
            float(c.strip().lower().startswith(a)) for c, a in zip(completions, answer)])
    with pytest.raises(AssertionError, match=r"'It costs 82 euros\.', 0\.0, 1\.0"):  # anywhere, not first
        exercises.check_exact_reward(lambda completions, answer, **kw: [
            float(a.lower() in c.lower()) for c, a in zip(completions, answer)])
    with pytest.raises(AssertionError, match="one reward per completion"):
        exercises.check_exact_reward(lambda completions, answer, **kw: 1.0 * sum(
            a in c for c, a in zip(completions, answer)) / len(completions) * torch.ones(1))


def test_share_of_silent_groups(capsys):
    advantages = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.2, 0.0, -0.6, -0.6, 0.0, 0.0, 0.0, 0.0])  # G = 4: 2 of 3 silent

    passes(exercises.check_share_of_silent_groups, solution("share_of_silent_groups"), advantages, 4, capsys=capsys)
    waits(exercises.check_share_of_silent_groups, advantages, 4, capsys=capsys)
    with pytest.raises(AssertionError, match="you get 0.750, the advantages give 0.667"):  # zeros, not groups
        exercises.check_share_of_silent_groups(lambda adv, g: (adv == 0).float().mean().item(), advantages, 4)


# 09 -------------------------------------------------------------------------------------------------------------
def _win_rate(scores, baseline):  # notebook 09's, ties counting half
    ties = scores == baseline
    return (((scores > baseline) & ~ties).float() + 0.5 * ties.float()).mean().item()


def test_fact_win_rate(capsys):
    facts = ["52 euros", "red", "2020", "9 hours"]
    answers = {"start (SFT model)": ["52 euros", "blue", "2021", "9 hours"],
               "DPO": ["It costs 52 euros.", "red", "2019", "ten hours"],
               "ORPO": ["52 euros", "Red.", "2020", "9 hours"]}

    fact_win_rate = solution("fact_win_rate", answers=answers, facts=facts, win_rate=_win_rate)
    passes(exercises.check_fact_win_rate, fact_win_rate, ["DPO", "ORPO"], answers, facts, _win_rate, capsys=capsys)
    waits(exercises.check_fact_win_rate, ["DPO", "ORPO"], answers, facts, _win_rate, capsys=capsys)
    with pytest.raises(AssertionError, match="you get .*, expected"):  # ties counted as losses
        exercises.check_fact_win_rate(
            lambda m: (torch.tensor(helpers.correctness_reward(answers[m], facts))
                       > torch.tensor(helpers.correctness_reward(answers["start (SFT model)"], facts))).float()
            .mean().item(), ["DPO", "ORPO"], answers, facts, _win_rate)


def test_score_length_correlation(capsys):
    answers = {"a": ["one", "one two three", "one two"], "b": ["one two three four", "x", "y z"]}
    scores = {"a": torch.tensor([0.1, 0.9, 0.4]), "b": torch.tensor([1.5, -0.2, 0.3])}

    score_length_correlation = solution("score_length_correlation", answers=answers,
                                        per_prompt={m: {"scores": v} for m, v in scores.items()})
    passes(exercises.check_score_length_correlation, score_length_correlation, scores, answers, capsys=capsys)
    waits(exercises.check_score_length_correlation, scores, answers, capsys=capsys)
    with pytest.raises(AssertionError, match="you get .*, expected"):  # characters, not words
        exercises.check_score_length_correlation(lambda: torch.corrcoef(torch.stack([
            torch.cat([scores[m] for m in answers]),
            torch.tensor([len(a) for m in answers for a in answers[m]], dtype=torch.float)]))[0, 1].item(),
            scores, answers)


def test_every_checker_is_tested_and_every_exercise_uses_one():
    checkers = {name for name, _ in inspect.getmembers(exercises, inspect.isfunction) if name.startswith("check_")}
    tested = set(re.findall(r"exercises\.(check_\w+)", Path(__file__).read_text()))
    assert checkers == tested, f"untested: {checkers - tested}; unknown: {tested - checkers}"
    used = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "def check_exercise" not in code, f"{path.name}: an exercise checker (and its answer) in the notebook"
        used |= set(re.findall(r"helpers\.exercises\.(check_\w+)\(", code))
    assert used == checkers, f"not used by a notebook: {checkers - used}"


def _notebook_code(path):
    """(code of the cells before each exercise, exercise names) for each exercise cell of a notebook."""
    cells, seen = [], []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        code = re.sub(r"^(\s*)[!%].*$", r"\1pass", cell.source, flags=re.M)  # IPython's ! and % lines
        if names := make_teacher.exercises(cell.source):
            cells.append(("\n".join(seen), names))
        seen.append(code)
    return cells


def _defined(code: str) -> set:
    """Every name a piece of code binds at any level (assignments, defs, imports, loop targets)."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _free_names(fn) -> set:
    """The names a solution reads that neither it nor Python defines: its notebook's globals and imports."""
    tree = ast.parse(inspect.getsource(fn).split("\n", 1)[1])  # without the @solves line
    local = {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
             for a in node.args + node.kwonlyargs + [node.vararg, node.kwarg] if a is not None}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - local - _defined(ast.unparse(tree)) - set(dir(builtins))


def test_every_exercise_has_its_solution_and_the_teacher_notebooks_are_current():
    """Issue 22: a teacher version of each notebook's exercises. Each exercise function in a notebook has a solution
    of the same name and signature; what a solution takes from its notebook is defined there before the exercise;
    teacher/NN_*.ipynb are what scripts/make_teacher.py makes now."""
    solved = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for before, names in _notebook_code(path):
            for name in names:
                assert solutions.NOTEBOOK.get(name) == path.name[:2], f"{path.name}: no solution for {name}()"
                missing = _free_names(getattr(solutions, name)) - _defined(before)
                assert not missing, f"{name}() uses {missing}, which {path.name} does not define before it"
                solved.add(name)
        teacher = ROOT / "teacher" / path.name
        assert teacher.read_text() == nbformat.writes(make_teacher.teacher_notebook(path)) + "\n", \
            f"teacher/{path.name} is out of date: python scripts/make_teacher.py"
        assert "YOUR CODE HERE" not in teacher.read_text()
    assert solved == set(solutions.NOTEBOOK), f"solutions without an exercise: {set(solutions.NOTEBOOK) - solved}"


def test_a_solution_with_another_signature_is_refused():
    cell = 'def nf4_round(values, blocksize):\n    raise NotImplementedError("YOUR CODE HERE")\n'
    with pytest.raises(ValueError, match="nf4_round: the notebook's signature"):
        make_teacher.solved(cell)


def test_a_helper_before_the_exercise_in_its_cell_stays():
    cell = ('def helper(x):\n    return x\n\n\ndef lora_param_count(d_in, d_out, r):\n'
            '    raise NotImplementedError("YOUR CODE HERE")\n')
    assert make_teacher.exercises(cell) == ["lora_param_count"]
    solved = make_teacher.solved(cell)
    assert solved.startswith("def helper(x):\n    return x\n") and "r * d_in + d_out * r" in solved
