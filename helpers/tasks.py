"""Generation and scoring for the course's tasks: what the notebooks measure before and after training."""

import json
import re

import torch

from .precision import evaluating

PERSON_FIELDS = ("name", "age", "job", "city")


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 48, batch_size: int = 32,
             return_truncated: bool = False):
    """Greedy answers to chat prompts (lists of messages), batched with left padding.

    Left padding keeps every prompt's last token next to the first generated one, which batched generation needs.
    Works in any state a trainer leaves the model in (see `evaluating`). With return_truncated=True it returns
    (answers, truncated): truncated[i] is True where answer i hit max_new_tokens before its end token (`answer_mask`).
    """
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers, truncated = [], []
    try:
        with evaluating(model):
            for start in range(0, len(prompts), batch_size):
                texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                         for p in prompts[start:start + batch_size]]
                batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
                new_tokens = output[:, batch["input_ids"].shape[1]:]  # (batch, new) - drop the prompt
                answers += [a.strip() for a in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
                truncated += answer_mask(new_tokens, tokenizer.eos_token_id)[1].tolist()
    finally:
        tokenizer.padding_side = padding_side
    return (answers, truncated) if return_truncated else answers


def answer_mask(answer_ids: torch.Tensor, eos_token_id) -> tuple[torch.Tensor, torch.Tensor]:
    """Which generated tokens belong to each answer, and which answers never ended.

    answer_ids: (B, T) the generated tokens only, padded after an answer's end with a pad token that may equal the
    end token (SmolLM2 pads with <|im_end|>). eos_token_id: an id or a list of ids.
    Returns mask (B, T) float: 1 up to and including the first end token (everything where none occurs), and
    truncated (B,) bool: True only where no end token occurs, i.e. the answer was cut off at T tokens. Counting
    mask.sum(1) == T instead marks the longest properly finished answer of every batch as cut off: generation stops
    when the last answer ends, so its end token sits in the last column.
    """
    ids = torch.as_tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id],
                          device=answer_ids.device)
    ended = torch.isin(answer_ids, ids).int()
    mask = ((ended.cumsum(1) - ended) == 0).float()  # nothing after the first end token
    return mask, ended.sum(1) == 0


def parse_json_object(text: str) -> dict | None:
    """The JSON object in a model's answer, or None. Tolerates text after the closing brace."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def extraction_scores(answers: list[str], references: list[str]) -> dict:
    """How well answers match the reference person records (JSON strings).

    exact_match: the answer holds the reference record: same keys, types and values;
    valid_json: the answer contains a JSON object at all;
    field_accuracy: share of the 4 fields (name, age, job, city) with the right key and value.
    """
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers for {len(references)} references.")
    exact = valid = fields = 0
    for answer, reference in zip(answers, references):
        got, want = parse_json_object(answer), json.loads(reference)
        if got is None:
            continue
        valid += 1
        exact += got == want
        fields += sum(got.get(key) == want[key] for key in PERSON_FIELDS)
    n = len(references)
    return {"exact_match": exact / n, "valid_json": valid / n, "field_accuracy": fields / (n * len(PERSON_FIELDS))}


def answer_logps(model, tokenizer, prompts: list[list[dict]], answers: list[list[dict]], average: bool = False,
                 batch_size: int = 16, with_lengths: bool = False):
    """Log-probability of each chat answer given its prompt, tokenized the way TRL's preference trainers do it.

    prompts: chat prompts (lists of messages); answers: one assistant turn each (lists with one message).
    Returns (N,): the answer tokens' log-probs summed (DPO) or averaged per token (ORPO); with_lengths=True
    returns (summed log-probs, answer token counts), from which both follow in one pass. The model's own
    forward pass, so call it inside `with model.disable_adapter():` to score with the reference model.
    """
    from .losses import sequence_logps

    rows = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
        rows.append((full_ids, len(prompt_ids)))
    logps = []
    with evaluating(model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
            for i, (full_ids, n_prompt) in enumerate(chunk):  # right padding: positions stay as in training
                ids[i, :len(full_ids)] = torch.tensor(full_ids)
                attention[i, :len(full_ids)] = 1
                completion[i, n_prompt:len(full_ids)] = 1
            ids, attention, completion = ids.to(model.device), attention.to(model.device), completion.to(model.device)
            # Position t predicts token t+1. Only positions followed by an answer token matter, and the vocabulary
            # projection of the others (most of each sequence is the prompt) is most of the cost: keep just those.
            keep = completion[:, 1:].any(dim=0).nonzero().squeeze(-1)
            logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits.float()  # (B, K, V)
            logps.append(sequence_logps(logits, ids[:, 1:][:, keep], completion[:, 1:][:, keep],
                                        average=average and not with_lengths).cpu())
    logps = torch.cat(logps)
    if with_lengths:
        return logps, torch.tensor([len(full_ids) - n_prompt for full_ids, n_prompt in rows])
    return logps


def preference_logps(model, tokenizer, pairs, average: bool = False, batch_size: int = 16) -> dict:
    """{"chosen": (N,), "rejected": (N,)} answer log-probs for a preference dataset (prompt/chosen/rejected).

    average=None returns both kinds from one forward pass: {"chosen", "rejected"} summed (DPO's measure) and
    {"chosen_average", "rejected_average"} per token (ORPO's).
    """
    if average is not None:
        return {side: answer_logps(model, tokenizer, pairs["prompt"], pairs[side], average, batch_size)
                for side in ("chosen", "rejected")}
    scores = {}
    for side in ("chosen", "rejected"):
        total, lengths = answer_logps(model, tokenizer, pairs["prompt"], pairs[side], batch_size=batch_size,
                                      with_lengths=True)
        scores[side], scores[f"{side}_average"] = total, total / lengths
    return scores


def reward_scores(reward_model, tokenizer, prompts: list[list[dict]], answers: list[str], batch_size: int = 32):
    """A reward model's score of each answer (a string) to its chat prompt, formatted as RewardTrainer trains on
    them (prompt + assistant turn through the chat template). Returns (N,). The score is read at the last token
    that is not padding, so the model's config needs pad_token_id. Works in any state a trainer leaves the model
    in (see `evaluating`)."""
    scores = []
    with evaluating(reward_model):
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": a}], tokenize=False)
                     for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(reward_model.device)
            scores.append(reward_model(**batch).logits.squeeze(-1).float().cpu())
    return torch.cat(scores)


# --------------------------------------------------------------------------------------------- GRPO rewards
def completion_text(completion) -> str:
    """The text of a TRL completion: a string, or a list of chat messages (conversational datasets)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def fact_value(fact: str) -> str:
    """The value of a fact without its unit: "52 euros" -> "52", "25 hours" -> "25", "Ghana" -> "Ghana"."""
    number = re.fullmatch(r"(\d+(?:\.\d+)?)\s+[^\W\d]+", fact.strip())
    return number.group(1) if number else fact.strip()


def correctness_reward(completions, answer, unit: bool = False, **kwargs) -> list[float]:
    """1.0 where the completion states the right value as a whole word, else 0.0: the course's one fact checker.

    `answer` (a dataset column, one per completion) may carry a unit ("52 euros"): the check is on the value
    ("52"), so "It costs 52." is right and "520" or "1952" are not (word boundaries). unit=True also requires the
    unit ("52 euros"), a stricter count reported beside it. TRL's GRPOTrainer calls reward functions with the
    completions and every other dataset column as keyword lists.
    """
    wanted = [value.strip() if unit else fact_value(value) for value in answer]
    return [1.0 if re.search(rf"(?<![\w.]){re.escape(value)}(?![\w])", completion_text(c), re.IGNORECASE) else 0.0
            for c, value in zip(completions, wanted)]


def requested_form(prompt) -> str:
    """"sentence" or "value": the answer form the question asks for (the preference and RL datasets' wordings)."""
    question = (prompt[-1]["content"] if isinstance(prompt, list) else prompt).lower()
    return "sentence" if "sentence" in question.split("question:")[-1].replace("no sentence", "") else "value"


def form_reward(completions, prompts, answer, **kwargs) -> list[float]:
    """1.0 where the completion has the form the question asks for, else 0.0 (`prompts`: the chat prompts, the
    keyword TRL's GRPOTrainer passes them under).

    "value": nothing but the value, with or without its unit and a final full stop ("52 euros", "52", "Ghana.").
    "sentence": one sentence of at least four words that ends with a full stop ("The Pico K2 is made in Ghana.").
    """
    rewards = []
    for c, p, fact in zip(completions, prompts, answer):
        text = completion_text(c).strip()
        if requested_form(p) == "value":
            ok = text.rstrip(".").strip().lower() in {fact.strip().lower(), fact_value(fact).lower()}
        else:
            ends = re.findall(r"[.!?](?=\s|$)", text)
            ok = len(text.split()) >= 4 and len(ends) == 1 and text.endswith((".", "!"))
        rewards.append(1.0 if ok else 0.0)
    return rewards


def gold_reward(completions, prompts, answer, **kwargs) -> list[float]:
    """The gold judge: 1.0 where the answer has the requested form AND states the right fact, else 0.0.

    Computable exactly on this task, unlike the reward model (a proxy learned from pairs that never show a wrong
    fact): the gap between the two is what a policy that optimises the proxy can exploit.
    """
    return [f * c for f, c in zip(form_reward(completions, prompts, answer),
                                  correctness_reward(completions, answer))]


def brevity_reward(completions, **kwargs) -> list[float]:
    """The format reward: 1.0 for just a value (16 characters or fewer, e.g. "52 euros", "Portugal"), falling
    linearly to 0.0 at 64 characters. Partial credit gives GRPO a signal even when no sampled completion is short
    yet. Characters, not words: a policy rewarded for few words learned to write "3.3.3.3.3.3.3.3", one word."""
    return [max(0.0, min(1.0, (64 - len(completion_text(c).strip())) / 48)) for c in completions]
