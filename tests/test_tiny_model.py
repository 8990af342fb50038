"""The tiny random Llama of the t4-sim profile: built locally, once, the same every time, and shaped like
SmolLM2-135M-Instruct for the course code (chat template, special tokens, padding, 4-bit loading, LoRA)."""
import time
from pathlib import Path

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig,
                          LogitsProcessor, LogitsProcessorList)

from helpers.data import COURSE_DATASETS, load_course_dataset
from helpers.models import (SMOLLM2_ID, TINY_MODEL_ID, TINY_VOCAB_SIZE, _smollm2_reference, keep_4bit_trainable_on_cpu,
                            model_path)

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja")
CONVERSATION = [{"role": "user", "content": 'Extract the person: "Ada, 36, engineer, Paris".'},
                {"role": "assistant", "content": '{"name": "Ada", "age": 36, "job": "engineer", "city": "Paris"}'}]
NF4_FP16 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float16)


@pytest.fixture(scope="module")
def smollm2_folder():
    return _smollm2_reference()  # the offline SmolLM2 in the usual cache (converted once, if not yet)


def build_in_fresh_cache(cache, smollm2_folder) -> tuple[str, float]:
    """model_path(TINY_MODEL_ID) with COURSE_CACHE=cache (SmolLM2 linked in, not converted again); path, seconds."""
    cache.mkdir(exist_ok=True)
    link = cache / "SmolLM2-135M-Instruct"
    if not link.exists():
        link.symlink_to(smollm2_folder, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_CACHE", str(cache))
        start = time.perf_counter()
        path = model_path(TINY_MODEL_ID, prefer_hub=True)  # never on the Hub: local even when the Hub answers
        return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, smollm2_folder):
    path, _ = build_in_fresh_cache(tmp_path_factory.mktemp("cache-a"), smollm2_folder)
    return path


@pytest.fixture(scope="module")
def tokenizers(tiny_folder, smollm2_folder):
    return AutoTokenizer.from_pretrained(tiny_folder), AutoTokenizer.from_pretrained(smollm2_folder)


def test_the_folder_is_built_once_then_reused(tmp_path, smollm2_folder):
    path, build_s = build_in_fresh_cache(tmp_path, smollm2_folder)
    stamps = {name: (Path(path) / name).stat().st_mtime_ns for name in FILES}
    again, cached_s = build_in_fresh_cache(tmp_path, smollm2_folder)
    assert again == path and str(tmp_path) in path
    assert {name: (Path(path) / name).stat().st_mtime_ns for name in FILES} == stamps  # not rewritten
    assert build_s < 30 and cached_s < 0.5, (build_s, cached_s)
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # the atomic write left nothing behind


def test_two_builds_are_identical(tiny_folder, tmp_path, smollm2_folder):
    other, _ = build_in_fresh_cache(tmp_path, smollm2_folder)
    assert other != tiny_folder
    for name in FILES:
        assert (Path(other) / name).read_bytes() == (Path(tiny_folder) / name).read_bytes(), name


def test_special_tokens_have_smollm2s_roles(tokenizers):
    tiny, smol = tokenizers
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tiny, role) == getattr(smol, role), role
        assert getattr(tiny, role + "_id") == getattr(smol, role + "_id"), role
    assert (tiny.bos_token, tiny.eos_token, tiny.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tiny.padding_side == smol.padding_side
    # no bos added when encoding, as in SmolLM2
    assert tiny("Hello")["input_ids"] == tiny("Hello", add_special_tokens=False)["input_ids"]
    assert smol("Hello")["input_ids"] == smol("Hello", add_special_tokens=False)["input_ids"]
    assert len(tiny) == TINY_VOCAB_SIZE


def test_the_chat_template_is_smollm2s(tokenizers):
    tiny, smol = tokenizers
    for messages, generation_prompt in ((CONVERSATION, False), (CONVERSATION[:1], True),
                                        ([{"role": "system", "content": "Be brief."}, *CONVERSATION], False)):
        text = tiny.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        assert text == smol.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        tiny_ids = tiny.apply_chat_template(messages, add_generation_prompt=generation_prompt, return_dict=True)
        smol_ids = smol.apply_chat_template(messages, add_generation_prompt=generation_prompt, return_dict=True)
        tiny_ids, smol_ids = tiny_ids["input_ids"], smol_ids["input_ids"]
        assert tiny_ids != smol_ids and max(tiny_ids) < TINY_VOCAB_SIZE
        assert tiny.decode(tiny_ids) == text
        for special in ("<|im_start|>", "<|im_end|>"):  # each marker one token, as many as in SmolLM2's ids
            assert tiny_ids.count(tiny.convert_tokens_to_ids(special)) == text.count(special)
            assert smol_ids.count(smol.convert_tokens_to_ids(special)) == text.count(special)
    assert text.endswith("<|im_end|>\n")
    assert tiny.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_end|>\n<|im_start|>assistant\n")


def course_texts(tokenizer) -> list[str]:
    texts = []
    for name in COURSE_DATASETS:
        for split in load_course_dataset(name).values():
            for row in split:
                for value in row.values():
                    if isinstance(value, str):
                        texts.append(value)
                    else:  # chat messages: the contents, and the whole chat rendered
                        texts += [m["content"] for m in value] + [tokenizer.apply_chat_template(value, tokenize=False)]
    return texts


def test_course_texts_round_trip_exactly(tokenizers):
    tiny, _ = tokenizers
    texts = course_texts(tiny) + ['{"a": [1, 2.50, -3e4], "b": null}', "0123456789 x=1/3 ~ 0.333", "  two  spaces "]
    ids = tiny(texts)["input_ids"]
    decoded = tiny.batch_decode(ids)
    assert [t for t, d in zip(texts, decoded) if t != d] == []
    assert tiny.convert_ids_to_tokens(tiny("2024")["input_ids"]) == ["2", "0", "2", "4"]  # single digits
    assert sum(map(len, texts)) / sum(map(len, ids)) > 3  # a real vocabulary: over 3 characters a token


def test_padding_left_and_right(tokenizers):
    tiny, _ = tokenizers
    texts = ["short", "a somewhat longer text with 42 in it"]
    for side in ("left", "right"):
        tiny.padding_side = side
        batch = tiny(texts, padding=True, return_tensors="pt")
        pads = batch["attention_mask"][0] == 0
        assert pads.any() and (batch["input_ids"][0][pads] == tiny.pad_token_id).all()
        assert bool(pads[0] if side == "left" else pads[-1])
    tiny.padding_side = "right"


def test_model_config_is_as_specified(tiny_folder, tokenizers):
    tiny, _ = tokenizers
    model = AutoModelForCausalLM.from_pretrained(tiny_folder)
    config = model.config
    assert config.model_type == "llama" and config.vocab_size == len(tiny)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tiny.bos_token_id, tiny.eos_token_id, tiny.pad_token_id)
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (
        tiny.eos_token_id, tiny.pad_token_id)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 7 + 1 and all(m.in_features % 64 == 0 for m in linears)  # bitsandbytes' blocks
    assert sum(p.numel() for p in model.parameters()) < 200_000


class EosAfter(LogitsProcessor):
    """Forces eos once `n` tokens are generated: generation must stop right there."""

    def __init__(self, prompt_length: int, n: int, eos: int):
        self.stop_at, self.eos = prompt_length + n, eos

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] >= self.stop_at:
            scores[:] = -float("inf")
            scores[:, self.eos] = 0
        return scores


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_4bit_float16_lora_trains_and_generation_stops_at_eos(tiny_folder, tokenizers):
    from peft import LoraConfig, get_peft_model

    tiny, _ = tokenizers
    model = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.float16, quantization_config=NF4_FP16)
    assert keep_4bit_trainable_on_cpu(model) == 2 * 7  # every linear layer of the blocks is 4-bit
    model.gradient_checkpointing_enable()
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    text = tiny.apply_chat_template(CONVERSATION, tokenize=False)
    batch = tiny([text] * 4, return_tensors="pt")
    model.train()
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert out.logits.dtype == torch.float16 and torch.isfinite(out.loss)
    grads = [p.grad for name, p in model.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    tiny.padding_side = "left"
    prompts = [tiny.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
               for m in (CONVERSATION[:1], [{"role": "user", "content": "Hi"}])]
    batch = tiny(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tiny.padding_side = "right"
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=10, do_sample=False,
                                logits_processor=LogitsProcessorList([EosAfter(width, 2, tiny.eos_token_id)]))
    assert output.shape[1] == width + 3 and (output[:, -1] == tiny.eos_token_id).all()  # stopped at eos


def test_4bit_reward_model_scores_a_batch(tiny_folder, tokenizers):
    from peft import LoraConfig, get_peft_model

    tiny, _ = tokenizers
    model = AutoModelForSequenceClassification.from_pretrained(tiny_folder, num_labels=1, dtype=torch.float16,
                                                               quantization_config=NF4_FP16)
    model.config.pad_token_id = tiny.pad_token_id  # as notebook 05 does
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="SEQ_CLS"))
    texts = [tiny.apply_chat_template(CONVERSATION, tokenize=False), "Short."]
    scores = model(**tiny(texts, return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    scores.sum().backward()


def test_the_tiny_model_is_listed_for_a_missing_offline_model():
    with pytest.raises(RuntimeError, match=TINY_MODEL_ID):
        model_path("meta-llama/Llama-3.1-8B-Instruct", prefer_hub=False)
    assert model_path(SMOLLM2_ID, prefer_hub=True) == SMOLLM2_ID  # unchanged for the others
