import pytest

from helpers.tasks import extraction_scores, parse_json_object, per_answer_scores

REF = '{"name": "Anya Quispe", "age": 50, "job": "cartographer", "city": "Medan"}'


def test_parse_json_object_finds_the_object_and_ignores_trailing_text():
    assert parse_json_object('Sure! {"a": 1} Hope that helps.') == {"a": 1}
    assert parse_json_object("no json here") is None
    assert parse_json_object('{"a": ') is None
    assert parse_json_object("[1, 2]") is None


def test_extraction_scores():
    answers = [
        REF,  # exact
        '{"name": "Anya Quispe", "age": "50", "job": "cartographer", "city": "Medan"}',  # age as a string: 3/4
        '{"name": "Anya Quispe", "occupation": "cartographer"}',  # 1/4 fields
        "Anya is a cartographer.",  # no JSON
    ]
    scores = extraction_scores(answers, [REF] * 4)
    assert scores == {"exact_match": 0.25, "valid_json": 0.75, "field_accuracy": pytest.approx((4 + 3 + 1) / 16)}


def test_extraction_scores_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 answers for 1 references"):
        extraction_scores([REF, REF], [REF])


def test_per_answer_scores_are_the_scores_behind_the_means():
    answers = [REF, '{"name": "Anya Quispe", "age": "50", "job": "cartographer", "city": "Medan"}', "no JSON"]
    per_answer = per_answer_scores(answers, [REF] * 3)
    assert per_answer == {"exact_match": [1.0, 0.0, 0.0], "valid_json": [1.0, 1.0, 0.0],
                          "field_accuracy": [1.0, 0.75, 0.0]}
    means = extraction_scores(answers, [REF] * 3)
    assert {m: sum(v) / 3 for m, v in per_answer.items()} == pytest.approx(means)
    with pytest.raises(ValueError, match="zip"):
        per_answer_scores([REF, REF], [REF])


def test_correctness_reward_matches_the_value_as_a_whole_word():
    from helpers.tasks import correctness_reward

    completions = ["82 euros", "The Quill M2 costs 82 euros.", "820", "in 1982", "8.82", "", "RED", [
        {"role": "assistant", "content": "It is red."}]]
    answers = ["82", "82", "82", "82", "82", "82", "red", "red"]
    assert correctness_reward(completions, answer=answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_brevity_reward_gives_partial_credit_by_characters():
    from helpers.tasks import brevity_reward

    rewards = brevity_reward(["82 euros", "The Quill M2 costs 82 euros.", "x" * 64, "3.3.3.3.3.3.3.3.3.3.3.3.3.3.3"])
    assert rewards[0] == 1.0 and 0.5 < rewards[1] < 1.0 and rewards[2] == 0.0
    assert rewards[3] < 0.8, "one long 'word' must not earn full format credit (a policy found that loophole)"


def test_a_fact_with_a_unit_is_checked_on_its_value_everywhere():
    """Bug: with the fact "52 euros" a correct "52" or "It costs 52." counted as a wrong fact (05 and 09 passed the
    value with its unit, 08 the bare value). One checker now: the value as a whole word; unit=True is the strict count."""
    from helpers.tasks import correctness_reward, fact_value

    assert [fact_value(f) for f in ("52 euros", "25 hours", "Ghana", "2017", "white")] == [
        "52", "25", "Ghana", "2017", "white"]
    answers = ["52", "It costs 52.", "The Zephy C5 costs 52 euros.", "520 euros", "1952", "25 euros"]
    assert correctness_reward(answers, answer=["52 euros"] * 6) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert correctness_reward(answers, answer=["52"] * 6) == correctness_reward(answers, answer=["52 euros"] * 6)
    assert correctness_reward(answers, answer=["52 euros"] * 6, unit=True) == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_answer_mask_marks_only_answers_without_an_end_token_as_truncated():
    """Bug (05's PPO loop): `mask.sum(1) == T` called the longest finished answer of every batch cut off, because
    generation stops when the last answer ends, so its end token sits in the last column: a length penalty."""
    import torch

    from helpers.tasks import answer_mask

    eos, pad = 2, 2  # SmolLM2 pads with its end token
    ids = torch.tensor([[5, 6, eos, pad, pad],   # ended early, padded
                        [5, 6, 7, 8, eos],       # the longest answer, ended in the last column
                        [5, 6, 7, 8, 9]])        # cut off: no end token
    mask, truncated = answer_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]
    old_rule = mask.sum(1) == mask.shape[1]
    assert old_rule.tolist() == [False, True, True]  # what the old code penalised
    # a pad token other than the end token, and several end tokens
    mask, truncated = answer_mask(torch.tensor([[5, 3, 0, 0], [5, 6, 7, 8]]), [2, 3])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]] and truncated.tolist() == [False, True]


def test_form_and_gold_judges_follow_the_request():
    from helpers.tasks import form_reward, gold_reward, requested_form

    def ask(how):
        return [{"role": "user", "content": f"The Zephy C5 is red. It costs 52 euros.\nQuestion: How much does "
                                            f"the Zephy C5 cost? {how}"}]
    value, sentence = ask("Reply with only the value, no sentence."), ask("Answer in a full sentence.")
    assert requested_form(value) == "value" and requested_form(sentence) == "sentence"
    answers = ["52 euros", "52.", "The Zephy C5 costs 52 euros.", "The Zephy C5 costs 25 euros.", "52 euros",
               "It costs 52 euros. It is red.", "The Zephy C5 costs 52 euros.", "52"]
    prompts = [value, value, value, value, sentence, sentence, sentence, sentence]
    assert form_reward(answers, prompts, ["52 euros"] * 8) == [1, 1, 0, 0, 0, 0, 1, 0]
    # right form AND right fact: a sentence with the wrong price has the form, not the fact
    assert gold_reward(answers, [sentence] * 8, ["52 euros"] * 8) == [0, 0, 1, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("method", ["lora", "prompt tuning", "prefix tuning"])
def test_completion_losses_average_to_trls_eval_loss_at_batch_size_one(method, tokenizer, tiny_config, tmp_path):
    """Notebook 03 needs one loss per held-out example (for paired intervals); trainer.evaluate gives only the mean.
    Checked against TRL on a tiny random Llama, for a weight adapter and both soft-prompt methods, whose logits
    carry virtual tokens in front (prompt tuning) or come from a KV-cache prefix (prefix tuning)."""
    import torch
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    import helpers

    torch.manual_seed(0)
    config = {"lora": LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
              "prompt tuning": PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
              "prefix tuning": PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True,
                                                  task_type="CAUSAL_LM")}[method]
    model = get_peft_model(LlamaForCausalLM(tiny_config()), config)
    data = helpers.load_course_dataset("sft")["dev"].select(range(6))
    args = SFTConfig(output_dir=str(tmp_path), per_device_eval_batch_size=1, use_cpu=True, bf16=False,
                     report_to="none", max_length=128)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    dev = trainer.eval_dataset
    losses = helpers.completion_losses(model, dev["input_ids"], dev["labels"], tokenizer.pad_token_id, batch_size=4)
    assert losses.shape == (6,)
    assert losses.mean().item() == pytest.approx(trainer.evaluate()["eval_loss"], rel=1e-4)
    assert losses.std().item() > 0  # one loss per example, not the batch mean repeated


# ------------------------------------------------------------------------------------------ greedy decoding
def _hf_answers(model, tokenizer, prompts, max_new_tokens):
    """What helpers.generate returned before decode: transformers' generate, greedy, left padding."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # the fixture is shared: give it back
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    with torch.no_grad():
        output = model.eval().generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
    return batch, output[:, batch["input_ids"].shape[1]:]


@pytest.fixture(scope="module")
def smollm():
    import torch
    from transformers import AutoModelForCausalLM

    import helpers

    return AutoModelForCausalLM.from_pretrained(helpers.model_path("HuggingFaceTB/SmolLM2-135M-Instruct"),
                                                dtype=torch.float32).eval()


def test_decode_gives_generates_greedy_tokens_while_answers_end_at_different_steps(tokenizer, smollm):
    """decode drops an ended answer's rows from the batch and its KV cache. Its tokens must be generate's,
    on the course model and prompts whose answers end at several different steps (the rows that leave the batch
    are then in the middle of it) and where some run to the token limit."""
    import torch

    import helpers
    from helpers.tasks import decode

    prompts = helpers.load_course_dataset("rl")["test"].select(range(12))["prompt"]  # 08's questions
    batch, reference = _hf_answers(smollm, tokenizer, prompts, 20)
    end = tokenizer.eos_token_id
    first_end = [int((row == end).nonzero()[0]) if (row == end).any() else None for row in reference]
    assert len({s for s in first_end if s is not None}) >= 3 and None in first_end, first_end  # a real test
    with torch.no_grad():
        ours = decode(smollm, batch["input_ids"], batch["attention_mask"], 20, [end], tokenizer.pad_token_id)
    assert torch.equal(ours, reference)


def test_generate_takes_the_fast_path_only_where_it_equals_generate(tokenizer, tiny_config):
    """LoRA: decode. A soft prompt (prompt tuning) and a repetition penalty (Qwen2.5's generation config):
    transformers' generate, whose result decode would not reproduce. All three answer as generate does."""
    import torch
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM

    import helpers
    from helpers.tasks import _plain_greedy

    prompts = helpers.load_course_dataset("preferences")["test"].select(range(6))["prompt"]
    for config in (LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
                   PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4), None):
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny_config())
        if config is None:
            model.generation_config.repetition_penalty = 1.3
        else:
            model = get_peft_model(model, config)
        assert _plain_greedy(model) == isinstance(config, LoraConfig)
        _, reference = _hf_answers(model, tokenizer, prompts, 10)
        expected = [a.strip() for a in tokenizer.batch_decode(reference, skip_special_tokens=True)]
        assert helpers.generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=4) == expected


# ------------------------------------------------------------------------------------------ sampling
def test_sample_answers_near_zero_temperature_are_the_greedy_answers(tokenizer, smollm):
    """Near temperature 0 every sample is the greedy answer. So the copied prompt cache, the rows of each prompt's k
    answers (prompt i at rows i*k .. i*k + k - 1), the left padding and the rows that leave the batch must all be
    right: a copy attached to the wrong prompt, or positions off by one, would give other answers."""
    import torch

    import helpers

    prompts = helpers.load_course_dataset("preferences")["test"].select(range(6))["prompt"]
    greedy = helpers.generate(smollm, tokenizer, prompts, max_new_tokens=20)
    torch.manual_seed(0)
    sampled = helpers.sample_answers(smollm, tokenizer, prompts, k=3, temperature=1e-4, max_new_tokens=20,
                                     rows_per_call=12)  # 4 prompts, then 2: two calls, the second one shorter
    assert len({len(a.split()) for a in greedy}) >= 2, greedy  # answers that end at different steps: a real test
    assert sampled == [[answer] * 3 for answer in greedy]


def test_sample_answers_draw_the_first_token_from_the_whole_tempered_distribution(tokenizer, smollm):
    """The first sampled token of 1,200 answers to one prompt (in 20 calls: a KV cache of 1,200 copies would take
    4 GB), against softmax(logits / T) of a plain forward pass over the whole prompt (no cache). A one-token answer is
    its token's text, so each answer text's share is compared with the probability of every token that reads so: the
    five likeliest texts and all the rest together, each within 4.5 standard errors (a top-k or top-p cut would
    starve the rest), and it is the tempered distribution, not the untempered one (they differ by more than that
    here)."""
    import torch

    import helpers

    prompt = helpers.load_course_dataset("preferences")["test"][0]["prompt"]
    n, temperature = 1200, 1.5
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = smollm(input_ids=ids["input_ids"]).logits[0, -1].float()
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in range(len(logits))], skip_special_tokens=True)]

    def by_text(probabilities):  # {answer text: probability}, tokens that read the same summed
        out = {}
        for text, p in zip(texts, probabilities.tolist()):
            out[text] = out.get(text, 0.0) + p
        return out

    tempered, plain = by_text(torch.softmax(logits / temperature, -1)), by_text(torch.softmax(logits, -1))
    torch.manual_seed(0)
    answers = [a for _ in range(20) for a in helpers.sample_answers(smollm, tokenizer, [prompt], k=n // 20,
                                                                    temperature=temperature, max_new_tokens=1)[0]]
    top = sorted(tempered, key=tempered.get, reverse=True)[:5]
    shares = {text: sum(a == text for a in answers) / n for text in top}
    shares["the rest"] = 1 - sum(shares.values())
    expected = {text: tempered[text] for text in top}
    expected["the rest"] = 1 - sum(expected.values())
    for text, p in expected.items():
        error = (p * (1 - p) / n) ** 0.5
        assert abs(shares[text] - p) < 4.5 * error, (text, shares[text], p)
    assert expected["the rest"] > 0.05  # the rest is a real part of the distribution here
    p = expected[top[0]]
    assert abs(plain[top[0]] - p) > 4.5 * (p * (1 - p) / n) ** 0.5


def test_sample_answers_leaves_filters_to_generate_and_refuses_a_bad_request(tokenizer, tiny_config):
    """A soft prompt, or a generation config with a filter generate applies (min_p), samples through generate:
    k answers per prompt all the same. Such a model cannot take a generator; k < 1 or temperature 0 is refused."""
    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM

    import helpers

    torch.manual_seed(0)
    soft = get_peft_model(LlamaForCausalLM(tiny_config()), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                             num_virtual_tokens=4))
    filtered = LlamaForCausalLM(tiny_config())
    filtered.generation_config.min_p = 0.1
    prompts = helpers.load_course_dataset("preferences")["test"].select(range(3))["prompt"]
    for model in (soft, filtered):
        answers = helpers.sample_answers(model, tokenizer, prompts, k=2, temperature=1.0, max_new_tokens=5)
        assert [len(row) for row in answers] == [2, 2, 2] and all(isinstance(a, str) for row in answers for a in row)
        assert tokenizer.padding_side == "right"  # given back
        with pytest.raises(ValueError, match="takes no generator"):
            helpers.sample_answers(model, tokenizer, prompts, k=2, temperature=1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="temperature > 0"):
        helpers.sample_answers(soft, tokenizer, prompts, k=2, temperature=0.0)
