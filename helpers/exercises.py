"""The checkers of the notebooks' exercises, kept out of the notebooks so that the answer is not printed next to the
question. Each takes the student's function and what the notebook measured, and either says "correct!" (returns
True), says "not done yet" while the function still raises NotImplementedError (returns False), or fails with an
AssertionError that says what differs. `tests/test_exercises.py` feeds every one a right answer and typical wrong
ones (the right answers there are the teacher's).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close


def _not_done(number: int, fn) -> bool:
    print(f"Exercise {number}: not done yet. Fill in {fn.__name__}, then re-run this cell.")
    return False


def _correct(number: int, extra: str = "") -> bool:
    print(f"Exercise {number}: correct!{extra}")
    return True


# 01 -------------------------------------------------------------------------------------------------------------
def check_trained_tokens(fn, train_dataset, number: int = 1) -> bool:
    """fn(labels) -> how many positions of one tokenized SFT example carry loss (labels != -100)."""
    try:
        for i in range(min(5, len(train_dataset))):
            labels = list(train_dataset[i]["labels"])
            want = len(labels) - labels.count(-100)
            got = fn(labels)
            assert got == want, f"example {i}: your function says {got}, the trainer's labels say {want}"
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number)


# 02 -------------------------------------------------------------------------------------------------------------
def check_lora_param_count(fn, number: int = 1) -> bool:
    """fn(d_in, d_out, r) -> trainable parameters of one LoRA adapter on a d_in -> d_out linear layer."""
    from . import lora

    try:
        for d_in, d_out, r in ((576, 576, 8), (576, 1536, 16), (4096, 14336, 64)):
            want = sum(p.numel() for p in lora.LoRALinear(nn.Linear(d_in, d_out, device="meta"), r=r).parameters()
                       if p.requires_grad)
            got = fn(d_in, d_out, r)
            assert got == want, f"({d_in}, {d_out}, r={r}): you say {got}, the layer has {want}"
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number)


def check_nf4_round(fn, number: int = 2) -> bool:
    """fn(values (64,)) -> (64,) the values NF4-quantized and restored, as bitsandbytes does it."""
    import bitsandbytes.functional as bnbf

    try:
        torch.manual_seed(1)
        block = torch.randn(64)
        packed, state = bnbf.quantize_4bit(block, blocksize=64, quant_type="nf4")
        got = torch.as_tensor(fn(block))
        assert got.shape == (64,), f"return the 64 restored values as (64,), not {tuple(got.shape)}"
        # bitsandbytes restores a 1-D block as (1, 64) on the CPU
        assert_close(got, bnbf.dequantize_4bit(packed, state).view(64), rtol=1e-6, atol=1e-7)
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number)


def check_level_usage(fn, weight, name: str = "the matrix", number: int = 3) -> bool:
    """fn(weight (out, in)) -> (16,) share of its weights quantized to each NF4 level (bitsandbytes' codes).
    name: what the weight is, for the message."""
    import bitsandbytes.functional as bnbf

    from . import nf4

    try:
        weight = weight.detach()
        packed, _ = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4")
        codes = nf4.unpack_bnb_codes(packed).long()
        got = torch.as_tensor(fn(weight), dtype=torch.float32)
        assert got.shape == (16,), f"expected 16 shares, one per level; got shape {tuple(got.shape)}"
        assert abs(got.sum().item() - 1) < 1e-5, f"the shares should sum to 1, not {got.sum().item():.4f}"
        assert_close(got, (codes == torch.arange(16)[:, None]).float().mean(1), rtol=0, atol=1e-6,
                     msg="shares differ from bitsandbytes' codes for this matrix: blocks of 64, one count per level "
                         "index 0..15")
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number, f" {name} uses its levels {got.min():.1%} to {got.max():.1%} of the time "
                            "(1/16 = 6.25%).")


# 03 -------------------------------------------------------------------------------------------------------------
def check_fewest_params_within(fn, table, number: int = 1) -> bool:
    """fn(table, tolerance) -> the method (row label) with the fewest trainable parameters among those whose held-out
    loss is within `tolerance` of the best."""
    try:
        for tolerance in (0.0, 0.05, 10.0):
            ok = table[table["held-out loss"] <= table["held-out loss"].min() + tolerance]
            want = ok["trainable params"].idxmin()
            got = fn(table, tolerance)
            assert got == want, f"tolerance {tolerance}: you say {got!r}, the table says {want!r}"
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number)


# 04 -------------------------------------------------------------------------------------------------------------
def check_truncate_and_normalize(fn, model, texts, dims, number: int = 1) -> bool:
    """fn(emb (N, D), dim) -> (N, dim) unit vectors of each row's first `dim` numbers, as sentence-transformers'
    truncate_dim gives them."""
    try:
        full = model.encode(texts, convert_to_tensor=True)
        for d in dims:
            want = F.normalize(model.encode(texts, truncate_dim=d, convert_to_tensor=True), dim=-1)
            got = fn(full, d)
            assert got.shape == want.shape, f"dim {d}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            assert_close(got, want, rtol=1e-4, atol=1e-5)
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number)


# 05 -------------------------------------------------------------------------------------------------------------
def check_accuracy_by_request(fn, reward_model, pairs, pair_accuracy, number: int = 1) -> bool:
    """fn(model, pairs) -> {"value": accuracy, "sentence": accuracy}: the reward model's pair accuracy on the pairs
    whose prompt asks for the value alone, and on those that ask for a sentence (helpers.requested_form).
    pair_accuracy(model, pairs) -> {"accuracy": ...} is the notebook's own."""
    from .tasks import requested_form

    try:
        got = fn(reward_model, pairs)
    except NotImplementedError:
        return _not_done(number, fn)
    want = {}
    for kind in ("value", "sentence"):  # "no sentence" asks for the value: requested_form reads the request
        subset = pairs.filter(lambda p: requested_form(p["prompt"]) == kind)
        want[kind] = pair_accuracy(reward_model, subset)["accuracy"]
    assert isinstance(got, dict) and set(got) == {"value", "sentence"}, \
        f"return a dict with the keys 'value' and 'sentence', not {got!r}"
    wrong = {k: (round(float(got[k]), 3), round(want[k], 3)) for k in want if abs(float(got[k]) - want[k]) > 1e-6}
    assert not wrong, f"(yours, expected) per request: {wrong}"
    return _correct(number, " " + str({k: round(v, 3) for k, v in want.items()}))


def check_fact_checked_reward(fn, number: int = 2) -> bool:
    """fn(scores (N,), answers, facts) -> (N,) the reward model's score, minus 5 where the answer lacks its fact."""
    scores = torch.tensor([2.0, 2.0, -1.0, 0.5])
    answers = ["52 euros", "The Zephy C5 costs 25 euros.", "It was released in 2020.", ""]
    facts = ["52 euros", "52 euros", "2020", "red"]
    try:
        got = fn(scores, answers, facts)
    except NotImplementedError:
        return _not_done(number, fn)
    assert_close(torch.as_tensor(got, dtype=torch.float32), torch.tensor([2.0, -3.0, -1.0, -4.5]),
                 msg=lambda m: f"answers {answers} with facts {facts}: {m}")
    return _correct(number)


def check_best_of_n_by_sampling(fn, number: int = 4) -> bool:
    """fn(scores (P, N), values (P, N), n, draws) -> (P,): per prompt, the mean value of the answer best-of-n keeps
    over `draws` random draws of n of the N answers (without replacement; keep the highest score). The Monte-Carlo
    version of helpers.stats.best_of_n, which it must match within sampling noise."""
    from .stats import best_of_n

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 8, generator=generator)
    values = (scores + torch.randn(4, 8, generator=generator) > 0).float()  # a 0/1 judge that partly agrees
    try:
        got = fn(scores, values, 3, 4000)
    except NotImplementedError:
        return _not_done(number, fn)
    got = torch.as_tensor(got, dtype=torch.float64)
    assert got.shape == (4,), f"one value per prompt: shape (4,) for 4 prompts, not {tuple(got.shape)}"
    # 4000 draws of a 0/1 value: a standard error of at most 0.008, so 0.05 is six of them
    assert_close(got, best_of_n(scores, values, 3), atol=0.05, rtol=0,
                 msg=lambda m: f"best-of-3 of 8 answers per prompt, 4000 draws: {m}")
    # best-of-8 of 8 keeps the top answer in every draw, unless the draws repeat answers
    assert_close(torch.as_tensor(fn(scores, values, 8, 200), dtype=torch.float64), best_of_n(scores, values, 8),
                 atol=1e-6, rtol=0, msg=lambda m: f"best-of-8 of 8 answers must keep the top-scored one every time "
                                                  f"(draw without repeats): {m}")
    return _correct(number)


# 06 -------------------------------------------------------------------------------------------------------------
def check_implicit_margin(fn, policy_logps: dict, reference_logps: dict, beta: float, number: int = 1) -> bool:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> the mean implicit reward margin.
    policy_logps, reference_logps: {"chosen": (N,), "rejected": (N,)} summed log-probabilities."""
    from .losses import dpo_loss

    chosen, rejected = policy_logps["chosen"], policy_logps["rejected"]
    ref_chosen, ref_rejected = reference_logps["chosen"], reference_logps["rejected"]
    try:
        got = fn(chosen, rejected, ref_chosen, ref_rejected, beta)
    except NotImplementedError:
        return _not_done(number, fn)
    _, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    want = (chosen_rewards - rejected_rewards).mean().item()
    assert abs(float(got) - want) < 1e-4, f"you get {float(got):.4f}, the implicit rewards give {want:.4f}"
    return _correct(number)


def check_closest_to_reference(fn, results: dict, number: int = 2) -> bool:
    """fn(results) -> the beta whose policy moved least from the reference: the smallest mean of |log-ratio| on the
    chosen and the rejected answers. results: {beta: {"log_ratio_chosen": ..., "log_ratio_rejected": ...}}."""
    moved = {b: (abs(r["log_ratio_chosen"]) + abs(r["log_ratio_rejected"])) / 2 for b, r in results.items()}
    try:
        got = fn(results)
    except NotImplementedError:
        return _not_done(number, fn)
    want = min(moved, key=moved.get)
    assert got == want, f"you say beta {got}, the log-ratios say beta {want}: {moved}"
    return _correct(number)


def check_kto_weights(fn, rows, number: int = 3) -> bool:
    """fn(labels: list[bool], True = desirable) -> (desirable_weight, undesirable_weight): positive weights with
    desirable_weight * n_desirable / (undesirable_weight * n_undesirable) between 1 and 4/3, TRL's advice for KTO
    when one kind of feedback is rarer. rows: the notebook's unpaired rows (their "label" column), tried first."""
    cases = [list(rows["label"]), [True] * 4 + [False] * 4, [True] * 3 + [False] * 9, [True] * 10 + [False] * 1,
             [True] * 1 + [False] * 30]
    try:
        results = [fn(labels) for labels in cases]
    except NotImplementedError:
        return _not_done(number, fn)
    for labels, got in zip(cases, results):
        desirable, undesirable = (float(w) for w in got)
        n_d, n_u = sum(labels), len(labels) - sum(labels)
        assert desirable > 0 and undesirable > 0, f"{n_d} desirable, {n_u} undesirable: weights must be positive, " \
                                                  f"not {got}"
        ratio = desirable * n_d / (undesirable * n_u)
        assert 1 - 1e-9 <= ratio <= 4 / 3 + 1e-9, \
            f"{n_d} desirable, {n_u} undesirable: your weights {got} give a ratio of {ratio:.3f}, not in [1, 4/3]"
    return _correct(number, f" the notebook's rows: {tuple(round(float(w), 3) for w in results[0])}")


def check_gold_verdicts(fn, labelled, rounds, number: int = 5) -> bool:
    """fn(pairs, facts) -> one verdict per pair, +1 / 0 / -1: the graded gold rule (requested form + right fact, 0 to
    2 points) on the chosen answer against the rejected one. labelled: {(labeller, round): (pairs, facts)};
    rounds: {labeller: [one entry per round with the gold_agrees, gold_ties and gold_disagrees it counted]}."""
    from .tasks import correctness_reward, form_reward

    def points(pairs, facts, side):
        answers, prompts = [pair[side][0]["content"] for pair in pairs], [pair["prompt"] for pair in pairs]
        return [f + c for f, c in zip(form_reward(answers, prompts, facts), correctness_reward(answers, facts))]

    tally = {1: 0, 0: 0, -1: 0}
    try:
        for (labeller, r), (pairs, facts) in labelled.items():
            if not pairs:
                continue
            got = [int(v) for v in fn(pairs, facts)]
            assert len(got) == len(pairs), f"{labeller}, round {r}: {len(got)} verdicts for {len(pairs)} pairs"
            want = [(c > w) - (c < w) for c, w in zip(points(pairs, facts, "chosen"), points(pairs, facts, "rejected"))]
            for k, (g, w) in enumerate(zip(got, want)):
                assert g == w, (f"{labeller}, round {r}, pair {k}: your verdict is {g}, the gold rule's is {w} (chosen "
                                f"{pairs[k]['chosen'][0]['content'][:60]!r}, rejected "
                                f"{pairs[k]['rejected'][0]['content'][:60]!r}, fact {facts[k]!r})")
            entry = rounds[labeller][r - 1]
            counted = (entry["gold_agrees"], entry["gold_ties"], entry["gold_disagrees"])
            assert (got.count(1), got.count(0), got.count(-1)) == counted, f"{labeller}, round {r}: counted {counted}"
            for v in got:
                tally[v] += 1
    except NotImplementedError:
        return _not_done(number, fn)
    return _correct(number, f" over every round: {tally[1]} agree, {tally[0]} tie, {tally[-1]} disagree")

# 07 -------------------------------------------------------------------------------------------------------------
def check_log_odds_ratio(fn, chosen_logps, rejected_logps, number: int = 1) -> bool:
    """fn(chosen (N,), rejected (N,)) -> (N,) log odds ratios of length-averaged log-probabilities."""
    from .losses import orpo_loss

    try:
        got = fn(chosen_logps, rejected_logps)
    except NotImplementedError:
        return _not_done(number, fn)
    _, want = orpo_loss(chosen_logps, rejected_logps)
    assert_close(torch.as_tensor(got).float(), want, rtol=1e-4, atol=1e-4,
                 msg=lambda m: f"your log odds ratios differ from losses.orpo_loss's: {m}")
    return _correct(number)


def check_extra_push_on_rejected(fn, results: dict, beta: float, number: int = 2) -> bool:
    """fn(results) -> how much lower the rejected answers' log-probability is after ORPO (beta) than after SFT alone
    (beta 0). results: {beta: {"logp_rejected": ...}}."""
    try:
        got = fn(results)
    except NotImplementedError:
        return _not_done(number, fn)
    want = results[0.0]["logp_rejected"] - results[beta]["logp_rejected"]
    assert abs(float(got) - want) < 1e-4, f"you get {float(got):.3f}, the table gives {want:.3f}"
    return _correct(number)


# 08 -------------------------------------------------------------------------------------------------------------
def check_exact_reward(fn, number: int = 1) -> bool:
    """fn(completions, answer, **kwargs) -> one reward per completion (a TRL reward function's signature): 1.0 where
    the completion, stripped of spaces and a final full stop, starts with the answer as a whole word (any case),
    else 0.0."""
    cases = [("82 euros", "82", 1.0), ("82", "82", 1.0), (" 82.", "82", 1.0), ("820", "82", 0.0),
             ("It costs 82 euros.", "82", 0.0), ("red", "red", 1.0), ("Red.", "red", 1.0), ("", "red", 0.0)]
    try:
        got = fn([c for c, _, _ in cases], answer=[a for _, a, _ in cases])
    except NotImplementedError:
        return _not_done(number, fn)
    assert len(got) == len(cases), f"one reward per completion: {len(got)} rewards for {len(cases)} completions"
    wrong = [(c, want, g) for (c, _, want), g in zip(cases, got) if g != want]
    assert not wrong, f"(completion, expected, got): {wrong}"
    return _correct(number)


def check_share_of_silent_groups(fn, advantages, group_size: int, number: int = 2) -> bool:
    """fn(advantages (B,), group_size) -> share of groups whose advantages are all 0 (every completion of the prompt
    got the same reward: nothing to learn from it)."""
    advantages = advantages.detach().cpu()
    try:
        got = fn(advantages, group_size)
    except NotImplementedError:
        return _not_done(number, fn)
    want = (advantages.view(-1, group_size).abs().amax(dim=1) < 1e-6).float().mean().item()
    assert abs(float(got) - want) < 1e-6, f"you get {float(got):.3f}, the advantages give {want:.3f}"
    return _correct(number)


# 09 -------------------------------------------------------------------------------------------------------------
def check_fact_win_rate(fn, methods, answers: dict, facts, win_rate, baseline: str = "start (SFT model)",
                        number: int = 1) -> bool:
    """fn(method) -> the method's win rate against the starting model on the right fact (helpers.correctness_reward),
    ties counting half. answers: {method: answers}; win_rate(scores, baseline_scores) is the notebook's own."""
    from .tasks import correctness_reward

    try:
        got = {method: fn(method) for method in methods}
    except NotImplementedError:
        return _not_done(number, fn)
    start_facts = torch.tensor(correctness_reward(answers[baseline], facts))
    for method, value in got.items():
        want = win_rate(torch.tensor(correctness_reward(answers[method], facts)), start_facts)
        assert abs(float(value) - want) < 1e-6, f"{method}: you get {float(value):.3f}, expected {want:.3f}"
    return _correct(number, " " + str({m: round(float(v), 2) for m, v in got.items()}))


def check_score_length_correlation(fn, scores: dict, answers: dict, number: int = 2) -> bool:
    """fn() -> Pearson correlation between the reward model's score and the answer's length in words, over every
    method's answers. scores: {method: (N,)}; answers: {method: N answers}."""
    try:
        got = fn()
    except NotImplementedError:
        return _not_done(number, fn)
    flat = torch.cat([torch.as_tensor(scores[m], dtype=torch.float) for m in answers])
    words = torch.tensor([len(a.split()) for m in answers for a in answers[m]], dtype=torch.float)
    want = torch.corrcoef(torch.stack([flat, words]))[0, 1].item()
    assert abs(float(got) - want) < 1e-4, f"you get {float(got):.3f}, expected {want:.3f}"
    return _correct(number, f" correlation {want:.2f}")
