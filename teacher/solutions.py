"""The teacher's solutions to the notebooks' exercises: one function per exercise, with the name and signature of
the function the student fills in.

- `python scripts/make_teacher.py` pastes each into a copy of its notebook: `teacher/NN_*.ipynb`, the notebooks with
  every exercise solved (no outputs; run one to see each check print "correct!").
- `tests/test_exercises.py` feeds each to its checker in helpers/exercises.py, next to the empty cell and typical
  wrong answers.

A solution may use what its notebook defined before the exercise (`pair_accuracy` in 05, `profile` in 07, `answers`,
`facts`, `win_rate` and `per_prompt` in 09): those names are the notebook's globals, which the tests provide as stand-ins.
"""
# ruff: noqa: F821  (names a solution takes from its notebook)
import torch
import torch.nn.functional as F

import helpers
from helpers import nf4

NOTEBOOK = {}  # function name -> the notebook ("01", ...) whose exercise it solves


def solves(notebook):
    def register(fn):
        NOTEBOOK[fn.__name__] = notebook
        return fn
    return register


@solves("01")
def count_trained_tokens(labels):
    """How many positions of one tokenized SFT example carry loss? labels: list[int], -100 = no loss."""
    return sum(label != -100 for label in labels)


@solves("02")
def lora_param_count(d_in, d_out, r):
    """Trainable parameters of one LoRA adapter on a d_in -> d_out linear layer."""
    return r * d_in + d_out * r  # A is (r, d_in), B is (d_out, r); the frozen W adds none


@solves("02")
def nf4_round(values):
    """values: (64,) float32 -> (64,) the NF4-quantized-then-restored values."""
    codes, absmax = nf4.quantize_nf4(values)  # one block of 64: its absmax, and the nearest of the 16 levels
    return nf4.dequantize_nf4(codes, absmax, values.shape)


@solves("02")
def level_usage(weight):
    """weight: (out, in) float tensor -> (16,) share of its weights quantized to each NF4 level (sums to 1)."""
    codes, _ = nf4.quantize_nf4(weight)
    return torch.bincount(codes.flatten().long(), minlength=16).float() / codes.numel()


@solves("03")
def fewest_params_within(table, tolerance):
    """table: the results DataFrame above. Returns the method name (a row label)."""
    loss = table["held-out loss"].astype(float)
    close = table[loss <= loss.min() + tolerance]  # every method within `tolerance` of the best
    return close["trainable params"].astype(float).idxmin()


@solves("04")
def truncate_and_normalize(emb, dim):
    """emb: (N, D) embeddings -> (N, dim) unit-length vectors made of the first `dim` numbers of each row."""
    return F.normalize(emb[:, :dim], dim=-1)  # truncate first, then back to length 1


@solves("05")
def accuracy_by_request(model, pairs):
    return {kind: pair_accuracy(model, pairs.filter(lambda p: helpers.requested_form(p["prompt"]) == kind))["accuracy"]
            for kind in ("value", "sentence")}


@solves("05")
def fact_checked_reward(scores, answers, facts):
    missing = torch.tensor([fact not in answer for answer, fact in zip(answers, facts)], dtype=torch.float)
    return torch.as_tensor(scores, dtype=torch.float) - 5.0 * missing


@solves("05")
def best_of_n_by_sampling(scores, values, n, draws):
    P, N = scores.shape
    picks = torch.rand(draws, P, N).argsort(-1)[..., :n]  # (draws, P, n): n of the N answers, no repeats
    best = picks.gather(-1, scores.expand(draws, P, N).gather(-1, picks).argmax(-1, keepdim=True))  # (draws, P, 1)
    return values.expand(draws, P, N).gather(-1, best).squeeze(-1).mean(0)  # (P,)


@solves("06")
def implicit_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    return (chosen_rewards - rejected_rewards).mean()


@solves("06")
def closest_to_reference(results):
    return min(results, key=lambda beta: abs(results[beta]["log_ratio_chosen"])
               + abs(results[beta]["log_ratio_rejected"]))


@solves("06")
def kto_weights(labels):
    n_desirable = sum(labels)
    n_undesirable = len(labels) - n_desirable
    if n_desirable >= n_undesirable:  # the rarer kind weighs more, so that both kinds pull equally: ratio 1
        return 1.0, n_desirable / n_undesirable
    return n_undesirable / n_desirable, 1.0



@solves("06")
def gold_verdicts(pairs, facts):
    def points(side):  # 0-2 per pair: the requested form + the right fact
        answers, prompts = [pair[side][0]["content"] for pair in pairs], [pair["prompt"] for pair in pairs]
        return [f + c for f, c in zip(helpers.form_reward(answers, prompts, facts),
                                      helpers.correctness_reward(answers, facts))]
    return [(c > r) - (c < r) for c, r in zip(points("chosen"), points("rejected"))]

@solves("07")
def log_odds_ratio(chosen_logps, rejected_logps):
    def log_odds(logp):  # log(p / (1 - p)) from log p
        return logp - torch.log1p(-logp.exp())
    return log_odds(chosen_logps) - log_odds(rejected_logps)


@solves("07")
def extra_push_on_rejected(results):
    return results[0.0]["logp_rejected"] - results[profile.orpo_beta]["logp_rejected"]  # SFT alone minus ORPO


@solves("08")
def exact_reward(completions, answer, **kwargs):
    import re  # (notebook 08 has not imported it)

    return [1.0 if re.match(rf"{re.escape(a)}\b", c.strip().rstrip(".").strip(), re.IGNORECASE) else 0.0
            for c, a in zip(completions, answer)]


@solves("08")
def share_of_silent_groups(advantages, group_size):
    groups = advantages.view(-1, group_size)  # (prompts, G)
    return (groups.abs().amax(dim=1) < 1e-6).float().mean().item()


@solves("09")
def fact_win_rate(method):
    start = torch.tensor(helpers.correctness_reward(answers["start (SFT model)"], facts))
    return win_rate(torch.tensor(helpers.correctness_reward(answers[method], facts)), start)


@solves("09")
def score_length_correlation():
    scores = torch.cat([torch.as_tensor(per_prompt[method]["scores"], dtype=torch.float) for method in answers])
    words = torch.tensor([len(a.split()) for method in answers for a in answers[method]], dtype=torch.float)
    return torch.corrcoef(torch.stack([scores, words]))[0, 1].item()


def solution(name, **notebook_globals):
    """The solution `name`, its free names bound to `notebook_globals` (the notebook's, or a test's stand-ins)."""
    fn = globals()[name]
    return type(fn)(fn.__code__, {**fn.__globals__, **notebook_globals}, fn.__name__, fn.__defaults__,
                    fn.__closure__)
