"""The helpers work in any state a trainer leaves a model in, and the GPU profiles' dtype traps are caught on the CPU.

Each test builds the state a T4 or an L4 run reaches (train mode with gradient checkpointing on, a float16 body with
a bfloat16 or float32 head, float32 norms with a bfloat16 output layer, TRL's bfloat16 adapters under fp16) on a
tiny random Llama with the course chat model's tokenizer, and checks the helpers give what a clean model gives.
"""
import warnings

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from torch.testing import assert_close
from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, LlamaForCausalLM,
                          LlamaForSequenceClassification)

import helpers
from helpers.precision import check_fp16_trainable, compute_dtype, fp16_safe
from helpers.profiles import PROFILES, Hardware, detect_hardware, select_profile

warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")


@pytest.fixture(scope="module")
def tiny_folder(tokenizer, tmp_path_factory, tiny_config):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama-states")
    LlamaForCausalLM(tiny_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_4bit(folder, dtype):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=quantization)
    helpers.keep_4bit_trainable_on_cpu(model)
    return model


def prompts(n=4):
    return helpers.load_course_dataset("preferences")["test"].select(range(n))["prompt"]


# ------------------------------------------------------------------------------------------ train mode
def test_generate_after_training_with_gradient_checkpointing_matches_eval_mode(tokenizer, tiny_config):
    """After trainer.train() the model is in train mode with gradient checkpointing on (t4, l4). transformers then
    turns the KV cache off inside the layers while generate still feeds one new token a step: every token after
    the first was predicted without its context."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()
    reference = helpers.generate(model, tokenizer, prompts(), max_new_tokens=12)
    model.gradient_checkpointing_enable()
    model.train()  # as the trainer leaves it
    assert helpers.generate(model, tokenizer, prompts(), max_new_tokens=12) == reference
    assert model.training and model.is_gradient_checkpointing  # the state is given back


def test_scoring_helpers_give_back_train_mode(tokenizer, tiny_config):
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(num_labels=1)).train()
    helpers.reward_scores(model, tokenizer, prompts(2), ["52", "A sentence."])
    assert model.training


# ------------------------------------------------------------------------------------------ mixed dtypes
def test_reward_scores_with_a_float16_body_and_a_bfloat16_head(tokenizer, tiny_config):
    """Notebook 05 on a T4: the reward model's score head is a trainable copy (modules_to_save) that TRL casts to
    bfloat16, while the 4-bit body computes in float16: `mat1 and mat2 must have the same dtype` without autocast."""
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(num_labels=1)).eval()
    answers = ["52 euros", "The Zephy C5 costs 52 euros.", "Portugal", ""]
    reference = helpers.reward_scores(model, tokenizer, prompts(), answers)
    model.half()
    model.score.to(torch.bfloat16)
    assert compute_dtype(model) == torch.float16
    mixed = helpers.reward_scores(model, tokenizer, prompts(), answers)
    assert_close(mixed, reference, rtol=0, atol=0.05 * reference.abs().max().item() + 1e-3)


def test_preference_logps_after_orpo_on_an_l4(tiny_folder, tokenizer):
    """Notebook 07 on an L4: ORPOTrainer runs prepare_model_for_kbit_training (every non-quantized weight to
    float32), then TRL's peft_module_casting_to_bf16 (embeddings and lm_head back to bfloat16, norms float32).
    Scoring outside autocast then feeds float32 hidden states to a bfloat16 lm_head."""
    from trl.experimental.utils import peft_module_casting_to_bf16

    model = load_4bit(tiny_folder, torch.bfloat16)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft_module_casting_to_bf16(model)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    assert {torch.float32, torch.bfloat16} <= dtypes  # the mixed state
    model.train()
    pairs = helpers.load_course_dataset("preferences")["test"].select(range(4))
    mixed = helpers.preference_logps(model, tokenizer, pairs, average=None)
    clean = helpers.preference_logps(load_4bit(tiny_folder, torch.float32), tokenizer, pairs, average=None)
    for key in ("chosen", "rejected", "chosen_average"):
        assert torch.isfinite(mixed[key]).all()
        assert_close(mixed[key], clean[key], rtol=0.05, atol=0.5)  # bfloat16 rounding over a few dozen tokens


def test_compute_dtype_reads_the_4bit_config_and_is_none_in_float32(tiny_folder, tokenizer, tiny_config):
    assert compute_dtype(load_4bit(tiny_folder, torch.float16)) == torch.float16
    assert compute_dtype(LlamaForCausalLM(tiny_config())) is None


# ------------------------------------------------------------------------------------------ fp16 + QLoRA
def test_a_float32_model_evaluates_in_float32_after_bfloat16_mixed_precision_training(tokenizer, tmp_path, tiny_config):
    """With COURSE_CPU_PRECISION=bfloat16 (or auto where the CPU is fast at it) the cpu profile trains float32 weights
    in bf16 mixed precision. accelerate then wraps the model's forward in a bfloat16 autocast for good, so every
    evaluation after training (generate, scores, the notebooks' checks against TRL) ran in bfloat16 while the
    evaluation before it ran in float32."""
    import trl

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config())
    sft = helpers.load_course_dataset("sft")["train"].select(range(4))
    args = trl.SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, fp16=False, report_to="none",
                         per_device_train_batch_size=2, max_steps=1, max_length=64, save_strategy="no", seed=0)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=sft, processing_class=tokenizer)
    trainer.train()
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    with torch.no_grad():
        as_trained = model(input_ids=ids).logits  # through the wrapper: bfloat16 products
        float32 = model._original_forward(input_ids=ids).logits
    assert (as_trained - float32).abs().max() > 1e-4  # the wrapper really computes in bfloat16
    assert compute_dtype(model) is None  # float32 weights: nothing to autocast to
    with helpers.evaluating(model):
        assert_close(model(input_ids=ids).logits, float32, rtol=0, atol=0)
    assert model(input_ids=ids).logits.dtype == torch.float32 and "_original_forward" in model.__dict__  # given back


def trl_trainer(kind, model, tokenizer, tmp_path, fp16):
    """A TRL trainer of `kind` on `model` with LoRA, fp16 mixed precision as the t4 profile sets it."""
    import trl

    common = dict(output_dir=str(tmp_path / kind), use_cpu=True, fp16=fp16, bf16=False, report_to="none",
                  per_device_train_batch_size=2, max_steps=2, gradient_checkpointing=True, seed=0, logging_steps=1)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS" if kind == "reward" else "CAUSAL_LM")
    data = helpers.load_course_dataset("preferences")["train"].select(range(4))
    if kind == "sft":
        sft = helpers.load_course_dataset("sft")["train"].select(range(4))
        return trl.SFTTrainer(model=model, args=trl.SFTConfig(**common, max_length=128), train_dataset=sft,
                              processing_class=tokenizer, peft_config=lora)
    if kind == "dpo":
        return trl.DPOTrainer(model=model, args=trl.DPOConfig(**common, max_length=128), train_dataset=data,
                              processing_class=tokenizer, peft_config=lora)
    if kind == "reward":
        return trl.RewardTrainer(model=model, args=trl.RewardConfig(**common), train_dataset=data,
                                 processing_class=tokenizer, peft_config=lora)
    rl = Dataset.from_list([{"prompt": p} for p in prompts(2)])
    return trl.GRPOTrainer(model=model, reward_funcs=[helpers.brevity_reward], train_dataset=rl,
                           args=trl.GRPOConfig(**common, num_generations=2, max_completion_length=4),
                           processing_class=tokenizer, peft_config=lora)


@pytest.mark.parametrize("kind", ["sft", "dpo", "reward", "grpo"])
def test_fp16_training_of_a_4bit_model_keeps_no_bfloat16_trainable(kind, tiny_folder, tokenizer, tmp_path):
    """TRL 1.16 casts the trainable parameters of a quantized model to bfloat16 whatever fp16 says; on a T4 the
    float16 gradient scaler then fails at the first step (`not implemented for 'BFloat16'`). A CPU has no such
    scaler, so this checks the condition itself, then trains two steps in the fixed state."""
    if kind == "reward":
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch.float16)
        model = LlamaForSequenceClassification.from_pretrained(tiny_folder, num_labels=1, dtype=torch.float16,
                                                               quantization_config=quantization)
        helpers.keep_4bit_trainable_on_cpu(model)
    else:
        model = load_4bit(tiny_folder, torch.float16)
    trainer = trl_trainer(kind, model, tokenizer, tmp_path, fp16=True)
    with pytest.raises(TypeError, match="bfloat16 while fp16=True"):
        check_fp16_trainable(trainer.model, fp16=True)  # what TRL leaves: the T4 failure, as a condition
    assert fp16_safe(trainer) > 0
    check_fp16_trainable(trainer.model, fp16=True)
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_fp16_safe_leaves_bf16_training_alone(tiny_folder, tokenizer, tmp_path):
    trainer = trl_trainer("sft", load_4bit(tiny_folder, torch.bfloat16), tokenizer, tmp_path, fp16=False)
    assert fp16_safe(trainer) == 0
    assert any(p.dtype == torch.bfloat16 for p in trainer.model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------ hardware
def test_a_t4_emulating_bfloat16_is_not_a_bfloat16_gpu(monkeypatch):
    """torch.cuda.is_bf16_supported() counts emulation and says True on a T4; the profile rules need the truth."""

    class T4Properties:
        name, total_memory = "Tesla T4", 15 * 1024**3

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: T4Properties())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    detect_hardware.cache_clear()
    try:
        hardware = detect_hardware()
    finally:
        detect_hardware.cache_clear()
    assert hardware.gpu_name == "Tesla T4" and not hardware.bf16_supported
    with pytest.raises(RuntimeError, match="no bfloat16"):
        select_profile("l4", hardware=hardware)


# ------------------------------------------------------------------------------------------ the -sim profiles
@pytest.mark.parametrize("name", ["t4-sim", "l4-sim"])
def test_simulation_profiles_run_the_gpu_settings_on_the_cpu(name):
    sim = select_profile(name, hardware=Hardware())
    gpu = PROFILES[sim.simulates]
    for setting in ("bf16", "fp16", "load_in_4bit", "gradient_checkpointing", "optim", "lora_r", "embed_lora"):
        assert getattr(sim, setting) == getattr(gpu, setting), setting
    assert sim.use_cpu and not sim.effects_meaningful and PROFILES["cpu"].effects_meaningful
    for steps in ("sft_steps", "qlora_steps", "peft_steps", "pref_steps", "rm_steps", "ppo_steps", "orpo_steps",
                  "grpo_steps", "embed_max_steps"):
        assert getattr(sim, steps) >= 2, steps  # at least two optimizer steps per trainer
    from helpers.models import OFFLINE_PACKAGES, TINY_MODEL_ID

    offline = set(OFFLINE_PACKAGES) | {TINY_MODEL_ID}
    models = {sim.chat_model, sim.qlora_model, sim.pref_model, sim.embedding_model}
    assert models | {m for _, m, _ in sim.homework_models} <= offline
    if sim.fp16:  # no float16 matrix kernels on a CPU: only the tiny model is affordable
        assert {sim.chat_model, sim.qlora_model, sim.pref_model} == {TINY_MODEL_ID}
    # notebook 06's iterative DPO (two rounds) labels fewer pairs than its offline run on a GPU, which then trains a
    # matched offline run on as many; the sims take that path too, so a T4 does not run it first
    for profile in (sim, gpu):
        assert 2 * profile.dpo_round_steps * profile.pref_batch_size < profile.pref_steps * profile.pref_batch_size
