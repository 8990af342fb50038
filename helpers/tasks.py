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
    The tokens are those of `model.generate(..., do_sample=False)`; `decode` only stops paying for answers that have
    ended (tests/test_tasks.py checks that both agree).
    """
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers, truncated = [], []
    end_tokens = _end_tokens(model, tokenizer) if _plain_greedy(model) else None  # None: transformers' generate
    try:
        with evaluating(model):
            for start in range(0, len(prompts), batch_size):
                batch = _chat_batch(tokenizer, prompts[start:start + batch_size], model.device)
                if end_tokens is not None:
                    new_tokens = decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                                        end_tokens, tokenizer.pad_token_id)
                else:  # a soft prompt (peft's prompt learning) or a generation config with logits processors
                    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=tokenizer.pad_token_id)
                    new_tokens = output[:, batch["input_ids"].shape[1]:]  # (batch, new) - drop the prompt
                answers += [a.strip() for a in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
                truncated += answer_mask(new_tokens, tokenizer.eos_token_id)[1].tolist()
    finally:
        tokenizer.padding_side = padding_side
    return (answers, truncated) if return_truncated else answers


def _chat_batch(tokenizer, prompts: list[list[dict]], device):
    """Chat prompts tokenized as one batch, with the tokenizer's padding side (left, for generating), on device."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def sample_answers(model, tokenizer, prompts: list[list[dict]], k: int, temperature: float, max_new_tokens: int = 48,
                   rows_per_call: int = 128, generator: torch.Generator | None = None) -> list[list[str]]:
    """k answers to each chat prompt, sampled at `temperature` from the whole distribution (no top-k or top-p cut),
    as generate(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) samples them. Returns one list of k
    answers per prompt.

    Two savings over generate on k copies of each prompt: the prompt (all but its last token) runs once and its KV
    cache is copied to its k answers, and an answer that has ended leaves the batch (`decode`). Prompts are most of
    the tokens and a few sampled answers run to the limit: 72 answers of up to 48 tokens (notebook 06's round) took
    21 s through generate and 10 s here, on 2 cores. The random draws differ from
    generate's (tests/test_tasks.py checks the distribution). A soft prompt or a generation config with logits
    processors (Qwen2.5's repetition penalty, min_p, typical_p) samples through generate itself, with those
    processors applied. Works in any state a trainer leaves the model in (`evaluating`).

    rows_per_call: answers decoded at once (prompts per call = rows_per_call // k, at least 1); their KV cache is
    the memory that grows: on a T4 with SmolLM2-1.7B (no grouped KV heads, ~0.2 MB a token in float16), 128 rows
    of ~70 prompt and 144 answer tokens hold about 5.4 GB (`helpers.memory.kv_cache_gb`). generator: a torch.Generator on the model's device, for
    draws of their own (the generate fallback cannot take one).
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"sample_answers needs k >= 1 and temperature > 0 (got k={k}, temperature={temperature}); "
                         "for greedy answers use helpers.generate.")
    own_sampler = _plain_greedy(model) and not {"min_p", "typical_p"} & set(  # filters generate would apply
        model.generation_config.to_diff_dict())
    if generator is not None and not own_sampler:
        raise ValueError("This model samples through transformers' generate (a soft prompt or logits processors in "
                         "its generation config), which takes no generator: seed with torch.manual_seed instead.")
    end_tokens = _end_tokens(model, tokenizer) if own_sampler else None  # None: transformers' generate
    per_call = max(1, rows_per_call // k)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers = []
    try:
        with evaluating(model):
            for start in range(0, len(prompts), per_call):
                batch = _chat_batch(tokenizer, prompts[start:start + per_call], model.device)
                ids, mask = batch["input_ids"], batch["attention_mask"]
                if end_tokens is None:
                    output = model.generate(input_ids=ids.repeat_interleave(k, 0),
                                            attention_mask=mask.repeat_interleave(k, 0), do_sample=True,
                                            temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                            pad_token_id=tokenizer.pad_token_id)
                    new_tokens = output[:, ids.shape[1]:]
                else:
                    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate counts them
                    cache = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                                  use_cache=True, logits_to_keep=1).past_key_values  # each prompt once
                    cache.batch_repeat_interleave(k)  # rows i*k .. i*k + k - 1: prompt i's k answers
                    new_tokens = decode(model, ids[:, -1:].repeat_interleave(k, 0), mask.repeat_interleave(k, 0),
                                        max_new_tokens, end_tokens, tokenizer.pad_token_id, past_key_values=cache,
                                        temperature=temperature, generator=generator)
                texts = [a.strip() for a in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
                answers += [texts[i * k:(i + 1) * k] for i in range(len(texts) // k)]
    finally:
        tokenizer.padding_side = padding_side
    return answers


# generation-config fields that leave greedy decoding alone (sampling settings do nothing with do_sample=False)
_GREEDY_NEUTRAL = {"use_cache", "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id",
                   "eos_token_id", "_from_model_config", "transformers_version", "do_sample", "temperature", "top_p",
                   "top_k", "min_p", "typical_p", "max_length", "max_new_tokens", "cache_implementation"}


def _soft_prompt(model) -> bool:
    """True for a peft prompt-learning model (prompt tuning, prefix tuning, p-tuning): peft puts its virtual tokens
    (or its prefix keys and values) in front of whatever it is given, so a sequence cannot be run in parts from a KV
    cache of its prompt."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and config.is_prompt_learning


def _plain_greedy(model) -> bool:
    """True where decode reproduces model.generate: no soft prompt, no logits processor in the generation
    config (Qwen2.5's repetition_penalty, say). For sampling, `sample_answers` also rules out min_p and typical_p."""
    if _soft_prompt(model):
        return False
    generation_config = getattr(model, "generation_config", None)
    return generation_config is not None and set(generation_config.to_diff_dict()) <= _GREEDY_NEUTRAL


def _end_tokens(model, tokenizer) -> list[int]:
    """The ids that end an answer, as generate reads them: the generation config's, else the tokenizer's."""
    ends = model.generation_config.eos_token_id
    ends = tokenizer.eos_token_id if ends is None else ends
    return [ends] if isinstance(ends, int) else list(ends)


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           end_tokens: list[int], pad_token_id: int, past_key_values=None, temperature: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy decoding with a KV cache, as model.generate(do_sample=False) does it, except that an answer that has
    ended leaves the batch: its rows of the cache are dropped and later steps run only the answers still going.
    temperature > 0 samples each token from softmax(logits / temperature) instead, the whole distribution (what
    generate(do_sample=True, temperature=t, top_k=0, top_p=1.0) samples from; its random draws are not generate's).

    input_ids, attention_mask: (B, P) left-padded prompts. Returns (B, T) new tokens, T the longest answer (at most
    max_new_tokens), padded with pad_token_id after an answer's end token, as generate pads them. A batch of 80
    answers of 20 tokens with a few of 48 runs most of its 48 steps for those few: here they cost 1 row, not 80.
    past_key_values: a cache that already holds the prompts' first L columns (`generate_and_score` fills it while
    scoring); input_ids then holds only the last P - L columns, attention_mask all P. The cache is used up.
    """
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    new_tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=input_ids.device)
    running = torch.arange(rows, device=input_ids.device)  # which rows of the batch are still being answered
    ends = torch.tensor(end_tokens, device=input_ids.device)
    cache = DynamicCache(config=model.config) if past_key_values is None else past_key_values
    ids, mask = input_ids, attention_mask
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # generate's positions for left padding
    positions = positions[:, mask.shape[1] - ids.shape[1]:]  # those of the tokens not yet in the cache
    steps = 0
    for step in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]  # (running, vocab)
        if temperature > 0:
            token = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=generator)[:, 0]
        else:
            token = logits.argmax(-1)
        new_tokens[running, step] = token
        steps = step + 1
        going = ~torch.isin(token, ends)
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, running, token, positions = mask[keep], running[keep], token[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones(len(running), 1)], dim=1)
        positions = positions[:, -1:] + 1
        ids = token[:, None]
    return new_tokens[:, :steps]


def completion_losses(model, input_ids: list[list[int]], labels: list[list[int]], pad_token_id: int,
                      batch_size: int = 16) -> torch.Tensor:
    """Teacher-forced loss of each example: the mean cross-entropy of its labelled tokens (labels != -100).

    input_ids, labels: one list of token ids per example, as a TRL trainer prepares them (`trainer.eval_dataset`
    holds both columns). Returns (N,) float32. Their mean equals `trainer.evaluate()["eval_loss"]` with
    `per_device_eval_batch_size=1`; at larger eval batches TRL averages over all labelled tokens of a batch, which
    weights long answers more. Batched with right padding; works for every peft method, soft prompts included: the
    logits of the real tokens are the last T positions of the output, whatever virtual tokens come before them.
    """
    losses = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(input_ids), batch_size):
            ids, attention = _padded(input_ids[start:start + batch_size], pad_token_id, left=False)
            targets, _ = _padded(labels[start:start + batch_size], -100, left=False)
            device = model.device if hasattr(model, "device") else ids.device
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
            logits = logits[:, -ids.shape[1]:].float()  # (B, T, V): prompt tuning puts virtual tokens first
            shifted = targets[:, 1:].to(logits.device)  # position t predicts token t + 1
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), shifted, ignore_index=-100,
                                                    reduction="none")  # (B, T - 1)
            counted = (shifted != -100).float()
            losses.append((nll * counted).sum(1) / counted.sum(1).clamp(min=1))
    return torch.cat(losses).cpu()


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

    exact_match: the answer holds the reference record as a program reading it would see it: the same keys and
        values after json.loads (key order is not checked, a JSON object being unordered; 34.0 equals 34, "34"
        does not);
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


def per_answer_scores(answers: list[str], references: list[str]) -> dict:
    """extraction_scores of each answer alone: {metric: [score of answer i] (n,)}, what stats.before_after and
    stats.interval take; each metric's mean is extraction_scores(answers, references)[metric]."""
    scores = [extraction_scores([answer], [reference]) for answer, reference in zip(answers, references, strict=True)]
    metrics = scores[0] if scores else ()  # whatever extraction_scores measures
    return {metric: [score[metric] for score in scores] for metric in metrics}


def _padded(rows: list[list[int]], pad_token_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists as (B, T) ids and attention mask, padded on the left or the right."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        where = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, where], mask[i, where] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


def _common_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens all the token-id lists share."""
    n = 0
    for tokens in zip(*rows):
        if any(t != tokens[0] for t in tokens):
            break
        n += 1
    return n


def shared_prompt_passes(model, sequences: list[list[list[int]]], shareable: list[int], pad_token_id: int,
                         batch_size: int = 16, **prefix_kwargs):
    """Run K continuations of each of N prompts through `model`, computing each prompt's tokens once.

    sequences: N lists of K token-id lists, each a whole sequence (prompt and continuation k). shareable: N ints, the
    most leading tokens of row i whose outputs nobody reads (every position the caller reads must come after them).
    Per batch of rows, one forward pass over each row's shared prefix (the tokens its K sequences have in common,
    at most shareable[i]; left padded, positions counted from the first real token) fills a KV cache. Each
    continuation then runs from that cache, right padded, its positions going on from the prefix, and the cache is
    cut back to the prefix before the next one. Prompts are most of every sequence the course scores, so this saves
    a third to a half of the work; the results equal a plain forward pass per sequence up to summation order.

    Yields (start, k, suffix_ids, offsets, forward) per batch and continuation: the rows are sequences[start:start +
    b]; suffix_ids (b, S) the tokens after the shared prefix, right padded with pad_token_id; offsets (b,) where each
    suffix starts in its sequence; forward(**kwargs) runs the model on the suffixes and returns its outputs;
    forward.cache is the KV cache, holding the prefix (`generate_and_score` decodes from it in the last continuation).
    Call inside `evaluating(model)`. Not for soft prompts (prompt or prefix tuning): peft would put its virtual tokens
    or its prefix in front of every continuation again.
    """
    if _soft_prompt(model):
        raise ValueError("A soft prompt (prompt or prefix tuning) cannot run a sequence in parts from its prompt's KV "
                         "cache: score whole sequences (helpers.answers_logps does so for such a model).")
    device = model.device
    for start in range(0, len(sequences), batch_size):
        rows = sequences[start:start + batch_size]
        shared = [min(_common_prefix(row), limit) for row, limit in zip(rows, shareable[start:start + batch_size])]
        if min(shared) < 1:
            raise ValueError("Every row needs at least one shared leading token (a chat template's first token).")
        prefix_ids, prefix_mask = _padded([row[0][:n] for row, n in zip(rows, shared)], pad_token_id, left=True)
        positions = (prefix_mask.cumsum(1) - 1).clamp(min=0)
        cache = model(input_ids=prefix_ids.to(device), attention_mask=prefix_mask.to(device),
                      position_ids=positions.to(device), use_cache=True, **prefix_kwargs).past_key_values
        offsets = torch.tensor(shared)
        for k in range(len(rows[0])):
            suffix_ids, suffix_mask = _padded([row[k][n:] for row, n in zip(rows, shared)], pad_token_id, left=False)
            attention = torch.cat([prefix_mask, suffix_mask], 1).to(device)
            positions = (offsets[:, None] + torch.arange(suffix_ids.shape[1])).to(device)

            def forward(ids=suffix_ids.to(device), attention=attention, positions=positions, **kwargs):
                return model(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                             use_cache=True, **kwargs)

            forward.cache = cache

            yield start, k, suffix_ids, offsets, forward
            if cache.get_seq_length() > prefix_ids.shape[1]:  # the suffix ran: cut it off again
                cache.crop(prefix_ids.shape[1] - cache.get_seq_length())


def _whole_sequence_logps(model, sequences: list[list[list[int]]], answer_starts: list[int], pad_token_id: int,
                          batch_size: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """answers_logps without a shared prompt (a soft prompt): each whole sequence through `completion_losses`, which
    reads the real tokens' logits after any virtual ones; its mean over the answer's tokens times their count."""
    sums, lengths = torch.zeros(K, len(sequences)), torch.zeros(K, len(sequences))
    for k in range(K):
        rows = [row[k] for row in sequences]
        labels = [[-100] * start + row[start:] for row, start in zip(rows, answer_starts)]  # the answer's tokens only
        lengths[k] = torch.tensor([len(row) - start for row, start in zip(rows, answer_starts)], dtype=torch.float)
        sums[k] = -completion_losses(model, rows, labels, pad_token_id, batch_size) * lengths[k]
    return sums, lengths


def answers_logps(model, tokenizer, prompts: list[list[dict]], answer_sets: list[list[list[dict]]],
                  batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of K answers to each prompt, the prompt computed once (`shared_prompt_passes`; a
    soft prompt runs each whole sequence instead).

    prompts: N chat prompts; answer_sets: K lists of N assistant turns (lists with one message), e.g. [chosen,
    rejected]. Tokenized the way TRL's preference trainers do it: the chat template of prompt + answer, the answer
    being the tokens after the prompt's generation prompt. Returns (sums (K, N), answer token counts (K, N)).
    """
    from .losses import sequence_logps

    sequences, shareable, answer_starts = [], [], []
    for i, prompt in enumerate(prompts):
        n_prompt = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"])
        sequences.append([tokenizer.apply_chat_template(prompt + answers[i], tokenize=True,
                                                        return_dict=True)["input_ids"] for answers in answer_sets])
        shareable.append(n_prompt - 1)  # position n_prompt - 1 predicts the first answer token
        answer_starts.append(n_prompt)
    if _soft_prompt(model):  # whole sequences, each prompt run once per answer
        return _whole_sequence_logps(model, sequences, answer_starts, tokenizer.pad_token_id, batch_size,
                                     len(answer_sets))
    sums, lengths = torch.zeros(len(answer_sets), len(prompts)), torch.zeros(len(answer_sets), len(prompts))
    with evaluating(model):
        for start, k, suffix, offsets, forward in shared_prompt_passes(model, sequences, shareable,
                                                                       tokenizer.pad_token_id, batch_size,
                                                                       logits_to_keep=1):
            rows = range(start, start + len(suffix))
            # suffix position j predicts suffix token j + 1; it is scored where that token is part of the answer
            labels = torch.cat([suffix[:, 1:], suffix[:, :1]], 1)
            first = torch.tensor([answer_starts[i] for i in rows]) - offsets  # first answer token, in the suffix
            end = torch.tensor([len(sequences[i][k]) for i in rows]) - offsets
            j = torch.arange(suffix.shape[1])
            scored = ((j >= first[:, None] - 1) & (j < end[:, None] - 1)).long()
            # the vocabulary projection of positions nobody scores is most of the cost: keep just the scored ones
            keep = scored.any(dim=0).nonzero().squeeze(-1)
            logits = forward(logits_to_keep=keep.to(model.device)).logits.float()  # (b, len(keep), vocab)
            sums[k, rows.start:rows.stop] = sequence_logps(logits, labels[:, keep].to(logits.device),
                                                           scored[:, keep].to(logits.device)).cpu()
            lengths[k, rows.start:rows.stop] = (end - first).float()
    return sums, lengths


def answer_logps(model, tokenizer, prompts: list[list[dict]], answers: list[list[dict]], average: bool = False,
                 batch_size: int = 16):
    """Log-probability of each chat answer given its prompt, tokenized the way TRL's preference trainers do it.

    prompts: chat prompts (lists of messages); answers: one assistant turn each (lists with one message).
    Returns (N,): the answer tokens' log-probs summed (DPO) or averaged per token (ORPO); `answers_logps` gives the
    sums and the token counts, from which both follow in one pass. The model's own forward pass, so call it inside
    `with model.disable_adapter():` to score with the reference model.
    """
    sums, lengths = answers_logps(model, tokenizer, prompts, [answers], batch_size)
    return sums[0] / lengths[0].clamp(min=1) if average else sums[0]


def generate_and_score(model, tokenizer, prompts: list[list[dict]], answer_sets: list[list[list[dict]]],
                       max_new_tokens: int = 48, batch_size: int = 32):
    """`generate`'s greedy answers to N chat prompts and `answers_logps`' log-probs of K given answers to them (the
    chosen and the rejected answer of a preference pair, say), each prompt computed once for both.

    Judging a policy asks both of every prompt; run apart, each would pay for the prompt again, and prompts are
    most of the tokens. Here the prompt (all but its last token) fills a KV cache as in `shared_prompt_passes`; the
    K given answers are scored from it, and then the last prompt token runs from it and greedy decoding goes on
    (`decode`). Same tokens as generate (tests/test_shared_prompts.py checks both parts against the two
    functions). Returns (answers (N strings), truncated (N bools), sums (K, N), answer token counts (K, N)).
    """
    if not _plain_greedy(model):  # a soft prompt or logits processors: the two passes, as they are
        answers, truncated = generate(model, tokenizer, prompts, max_new_tokens, batch_size, return_truncated=True)
        return (answers, truncated, *answers_logps(model, tokenizer, prompts, answer_sets, batch_size))
    from .losses import sequence_logps

    end_tokens, pad = _end_tokens(model, tokenizer), tokenizer.pad_token_id
    sequences, shareable, answer_starts = [], [], []
    for i, prompt in enumerate(prompts):
        question = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"]
        rows = [tokenizer.apply_chat_template(prompt + answers[i], tokenize=True, return_dict=True)["input_ids"]
                for answers in answer_sets]
        if any(row[:len(question) - 1] != question[:-1] for row in rows):
            raise ValueError("The chat template does not put an answer after the prompt's tokens, so the prompt "
                             "cannot be shared: use helpers.generate and helpers.answers_logps apart.")
        sequences.append(rows + [question])  # the last continuation: the prompt's last token, then decoding
        shareable.append(len(question) - 1)  # position len - 1 predicts the first answer token
        answer_starts.append(len(question))
    K = len(answer_sets)
    sums, lengths = torch.zeros(K, len(prompts)), torch.zeros(K, len(prompts))
    answers, truncated = [None] * len(prompts), [None] * len(prompts)
    with evaluating(model):
        for start, k, suffix, offsets, forward in shared_prompt_passes(model, sequences, shareable, pad, batch_size,
                                                                       logits_to_keep=1):
            rows = range(start, start + len(suffix))
            if k == K:  # suffix (b, 1): each prompt's last token; the cache holds the rest, left padded
                width = forward.cache.get_seq_length()
                mask = torch.cat([(torch.arange(width) >= width - offsets[:, None]).long(),  # the prefix's padding
                                  torch.ones(len(suffix), 1, dtype=torch.long)], 1)
                new = decode(model, suffix.to(model.device), mask.to(model.device), max_new_tokens,
                             end_tokens, pad, past_key_values=forward.cache)
                answers[rows.start:rows.stop] = [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
                truncated[rows.start:rows.stop] = answer_mask(new, tokenizer.eos_token_id)[1].tolist()
                continue
            labels = torch.cat([suffix[:, 1:], suffix[:, :1]], 1)  # as in answers_logps
            first = torch.tensor([answer_starts[i] for i in rows]) - offsets
            end = torch.tensor([len(sequences[i][k]) for i in rows]) - offsets
            j = torch.arange(suffix.shape[1])
            scored = ((j >= first[:, None] - 1) & (j < end[:, None] - 1)).long()
            keep = scored.any(dim=0).nonzero().squeeze(-1)
            logits = forward(logits_to_keep=keep.to(model.device)).logits.float()
            sums[k, rows.start:rows.stop] = sequence_logps(logits, labels[:, keep].to(logits.device),
                                                           scored[:, keep].to(logits.device)).cpu()
            lengths[k, rows.start:rows.stop] = (end - first).float()
    return answers, truncated, sums, lengths


def preference_logps(model, tokenizer, pairs, average: bool = False, batch_size: int = 16) -> dict:
    """{"chosen": (N,), "rejected": (N,)} answer log-probs for a preference dataset (prompt/chosen/rejected).

    The chosen and the rejected answer share their prompt's forward pass (`shared_prompt_passes`; not with a soft
    prompt, see `answers_logps`).
    average=None returns both kinds from one pass: {"chosen", "rejected"} summed (DPO's measure) and
    {"chosen_average", "rejected_average"} per token (ORPO's).
    """
    sides = ("chosen", "rejected")
    sums, lengths = answers_logps(model, tokenizer, pairs["prompt"], [pairs[side] for side in sides], batch_size)
    scores = {}
    for k, side in enumerate(sides):
        if average is None:
            scores[side], scores[f"{side}_average"] = sums[k], sums[k] / lengths[k].clamp(min=1)
        else:
            scores[side] = sums[k] / lengths[k].clamp(min=1) if average else sums[k]
    return scores


def reward_scores(reward_model, tokenizer, prompts: list[list[dict]], answers, batch_size: int = 32):
    """A reward model's score of each answer (a string) to its chat prompt, formatted as RewardTrainer trains on
    them (prompt + assistant turn through the chat template). Returns (N,).

    answers: N strings, or a dict of such lists for the same prompts (one per policy, or {"chosen": ...,
    "rejected": ...}): then it returns a dict of (N,) scores and runs each prompt once (`shared_prompt_passes`).
    The score is read at the last token that is not padding, so the model's config needs pad_token_id. Works in any
    state a trainer leaves the model in (see `evaluating`).
    """
    if not isinstance(answers, dict):
        return reward_scores(reward_model, tokenizer, prompts, {"answers": answers}, batch_size)["answers"]
    names, pad = list(answers), reward_model.config.pad_token_id
    if pad is None:
        raise ValueError("The reward model's config has no pad_token_id, so it cannot find each answer's last token: "
                         "set reward_model.config.pad_token_id = tokenizer.pad_token_id first.")
    sequences, shareable = [], []
    for i, prompt in enumerate(prompts):
        texts = [tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answers[name][i]}],
                                               tokenize=False) for name in names]
        rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        sequences.append(rows)
        # the score is read at each sequence's last non-pad token: it must lie after the shared part
        shareable.append(min(max(j for j, t in enumerate(row) if t != pad) for row in rows))
    scores = torch.zeros(len(names), len(prompts))
    with evaluating(reward_model):
        for start, k, suffix, _, forward in shared_prompt_passes(reward_model, sequences, shareable, pad, batch_size):
            scores[k, start:start + len(suffix)] = forward().logits.squeeze(-1).float().cpu()
    return {name: scores[k] for k, name in enumerate(names)}


# --------------------------------------------------------------------------------------------- GRPO rewards
def completion_text(completion) -> str:
    """The text of a TRL completion: a string, or a list of chat messages (conversational datasets)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def fact_value(fact: str) -> str:
    """The value of a fact without its unit: "52 euros" -> "52", "25 hours" -> "25", "Ghana" -> "Ghana"."""
    number = re.fullmatch(r"(\d+(?:\.\d+)?)\s+[^\W\d]+", fact.strip())
    return number.group(1) if number else fact.strip()


def fact_of(pair) -> str:
    """The fact a preference pair's question asks for, as its shorter answer states it ("52 euros"): both answers
    of a course pair state the fact, one of them as just the value."""
    return min(pair["chosen"][0]["content"], pair["rejected"][0]["content"], key=len)


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
