"""Scoring with the prompt computed once (helpers.tasks.shared_prompt_passes) gives what scoring every sequence on
its own gives, in float32, with a LoRA adapter and in a T4's 4-bit float16 state, and it really saves the work.

The reference below runs each sequence alone (batch of one, no padding, no cache): nothing of the shared-prefix
machinery (left-padded prefix, positions, KV cache, crop between continuations) takes part in it.
"""
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.testing import assert_close
from transformers import (AutoModelForSequenceClassification, BitsAndBytesConfig, LlamaForCausalLM,
                          LlamaForSequenceClassification)

import helpers
from helpers.losses import sequence_logps

warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")


@pytest.fixture(scope="module")
def pairs():
    # prompts of different lengths, so that the left-padded prefixes and right-padded suffixes really pad
    return helpers.load_course_dataset("preferences")["test"].select(range(6))


def alone_logps(model, tokenizer, prompt, answer):
    """Summed log-prob of one answer, its sequence run alone."""
    n_prompt = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    ids = torch.tensor([tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]])
    with torch.no_grad():  # a soft prompt's virtual tokens come first: the real tokens' logits are the last ones
        logits = model(input_ids=ids).logits[:, -ids.shape[1]:-1].float()
    mask = torch.zeros_like(ids[:, 1:])
    mask[:, n_prompt - 1:] = 1
    return sequence_logps(logits, ids[:, 1:], mask).item()


def alone_score(reward_model, tokenizer, prompt, answer):
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return reward_model(input_ids=ids).logits.squeeze().float().item()


def lora(model, task_type):
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=task_type,
                                             init_lora_weights=False))  # random B: the adapter changes the outputs
    return model.eval()


def with_adapter(model, adapter: str):
    """The tiny model as it is, with LoRA, or with a soft prompt (random virtual tokens or prefix)."""
    from peft import PrefixTuningConfig, PromptTuningConfig

    torch.manual_seed(1)
    if adapter == "lora":
        return lora(model, "CAUSAL_LM")
    if adapter == "prompt tuning":
        return get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    if adapter == "prefix tuning":
        return get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    return model


@pytest.mark.parametrize("adapter", ["none", "lora", "prompt tuning", "prefix tuning"])
def test_preference_logps_equal_each_sequence_scored_alone(tokenizer, tiny_config, pairs, adapter):
    """A soft prompt cannot share its prompt's KV cache (peft puts the virtual tokens, or its prefix, in front of
    every continuation again): notebook 03 once reported prompt tuning's held-out loss as 15.1 instead of 0.12."""
    torch.manual_seed(0)
    model = with_adapter(LlamaForCausalLM(tiny_config()).eval(), adapter)
    ours = helpers.preference_logps(model, tokenizer, pairs, average=None, batch_size=4)  # two batches, one short
    for side in ("chosen", "rejected"):
        alone = torch.tensor([alone_logps(model, tokenizer, p["prompt"], p[side]) for p in pairs])
        assert_close(ours[side], alone, rtol=1e-5, atol=1e-4)
    if adapter in ("prompt tuning", "prefix tuning"):  # and against peft's own loss, which places the labels itself
        prompt, answer = pairs[0]["prompt"], pairs[0]["chosen"]
        n_prompt = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"])
        ids = torch.tensor([tokenizer.apply_chat_template(prompt + answer, tokenize=True,
                                                          return_dict=True)["input_ids"]])
        labels = ids.clone()
        labels[:, :n_prompt] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss  # the mean over the answer's tokens
        assert_close(ours["chosen"][0], -loss * (ids.shape[1] - n_prompt), rtol=1e-4, atol=1e-3)
        with pytest.raises(ValueError, match="soft prompt"):  # the shared passes refuse it
            next(helpers.tasks.shared_prompt_passes(model, [[ids[0].tolist()]], [n_prompt - 1],
                                                    tokenizer.pad_token_id))
    if adapter != "none":  # the adapter is on in the scoring passes too: switching it off changes the scores
        with model.disable_adapter():
            off = helpers.preference_logps(model, tokenizer, pairs, batch_size=4)
        assert (off["chosen"] - ours["chosen"]).abs().max() > 1e-3


@pytest.mark.parametrize("with_lora", [False, True])
def test_reward_scores_of_several_answer_lists_equal_each_answer_scored_alone(tokenizer, tiny_config, pairs, with_lora):
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(num_labels=1)).eval()
    if with_lora:
        model = lora(model, "SEQ_CLS")
    answers = {"chosen": [m[0]["content"] for m in pairs["chosen"]],
               "rejected": [m[0]["content"] for m in pairs["rejected"]],
               "odd": ["", "52", "A long answer that goes on " * 6, "Portugal.", " ", "<|im_end|>"]}
    ours = helpers.reward_scores(model, tokenizer, pairs["prompt"], answers, batch_size=4)
    assert list(ours) == list(answers)
    for name, texts in answers.items():
        alone = torch.tensor([alone_score(model, tokenizer, p, a) for p, a in zip(pairs["prompt"], texts)])
        assert_close(ours[name], alone, rtol=1e-5, atol=1e-4)
        # one list alone gives the same scores as the same list among others
        assert_close(helpers.reward_scores(model, tokenizer, pairs["prompt"], texts), ours[name], rtol=1e-5, atol=1e-4)


def test_reward_scores_need_the_pad_token_in_the_config(tokenizer, tiny_config, pairs):
    model = LlamaForSequenceClassification(tiny_config(num_labels=1)).eval()
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="config.pad_token_id = tokenizer.pad_token_id"):
        helpers.reward_scores(model, tokenizer, pairs["prompt"][:2], ["52", "53"])


def test_shared_passes_in_a_t4s_4bit_float16_state(tokenizer, tiny_config, pairs, tmp_path):
    """The t4 profile's reward model: a 4-bit body computing in float16 (the cache holds float16 keys and values)."""
    torch.manual_seed(0)
    LlamaForSequenceClassification(tiny_config(num_labels=1)).save_pretrained(tmp_path)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float16)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype=torch.float16,
                                                               quantization_config=quantization).eval()
    answers = [m[0]["content"] for m in pairs["chosen"]]
    ours = helpers.reward_scores(model, tokenizer, pairs["prompt"], answers)
    with helpers.evaluating(model):
        alone = torch.tensor([alone_score(model, tokenizer, p, a) for p, a in zip(pairs["prompt"], answers)])
    assert torch.isfinite(ours).all()
    assert_close(ours, alone, rtol=0.02, atol=0.02 * alone.abs().max().item() + 1e-3)  # float16 rounding


def test_each_prompt_is_computed_once(tokenizer, tiny_config, pairs):
    """The point of sharing: a pair's prompt runs through the model once, not once per answer."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()
    seen = []
    model.model.embed_tokens.register_forward_hook(lambda module, args, out: seen.append(int((args[0] >= 0).sum())))
    helpers.preference_logps(model, tokenizer, pairs, batch_size=len(pairs))
    assert len(seen) == 3  # the prompts, then the chosen answers, then the rejected ones
    unshared = sum(len(tokenizer.apply_chat_template(p["prompt"] + p[side], tokenize=True, return_dict=True)
                       ["input_ids"]) for p in pairs for side in ("chosen", "rejected"))
    # every token run, padding included, against both sequences of every pair run without a single pad token
    assert sum(seen) < 0.75 * unshared, (seen, unshared)


@pytest.mark.parametrize("adapter", ["none", "lora", "prompt tuning", "prefix tuning"])
def test_generate_and_score_equals_generate_and_preference_logps(tokenizer, tiny_config, pairs, adapter):
    """Notebook 09 judges each policy with one pass over each prompt: its answers must be helpers.generate's and its
    log-probs preference_logps', over two batches (the second one short) and answers that end at different steps.
    A soft prompt (prompt or prefix tuning) cannot share the prompt with decode: there the two functions run
    apart."""
    torch.manual_seed(0)
    model = with_adapter(LlamaForCausalLM(tiny_config()).eval(), adapter)
    answers, truncated, sums, lengths = helpers.generate_and_score(
        model, tokenizer, pairs["prompt"], [pairs["chosen"], pairs["rejected"]], max_new_tokens=12, batch_size=4)
    expected, expected_truncated = helpers.generate(model, tokenizer, pairs["prompt"], max_new_tokens=12,
                                                    batch_size=4, return_truncated=True)
    assert answers == expected and truncated == expected_truncated
    assert len({len(tokenizer(a)["input_ids"]) for a in answers}) > 1, answers  # answers of different lengths
    logps = helpers.preference_logps(model, tokenizer, pairs, average=None, batch_size=4)
    assert_close(sums, torch.stack([logps["chosen"], logps["rejected"]]), rtol=1e-5, atol=1e-4)
    assert_close(sums / lengths, torch.stack([logps["chosen_average"], logps["rejected_average"]]), rtol=1e-5,
                 atol=1e-4)


def test_generate_and_score_computes_each_prompt_once(tokenizer, tiny_config, pairs):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()
    seen = []
    model.model.embed_tokens.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    helpers.generate_and_score(model, tokenizer, pairs["prompt"], [pairs["chosen"], pairs["rejected"]],
                               max_new_tokens=3, batch_size=len(pairs))
    width = max(len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for p in pairs["prompt"])
    # the prompts (all but their last token), the chosen answers, the rejected ones, then one token per decoding step
    assert seen[0][1] <= width - 1 and all(shape[1] == 1 for shape in seen[3:]), seen
    assert len(seen) <= 3 + 3
