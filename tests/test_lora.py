"""helpers/lora.py against peft: the from-scratch layer computes what peft's LoRA layer computes."""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.lora import LoRALinear, add_lora, check_target_modules, linear_module_names


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_a_fresh_lora_layer_is_the_pretrained_layer():
    torch.manual_seed(0)
    base = nn.Linear(32, 48)
    x = torch.randn(5, 32)
    assert_close(LoRALinear(copy.deepcopy(base), r=4, alpha=8)(x), base(x), rtol=0, atol=0)


def test_lora_layer_equals_peft_layer_with_the_same_A_and_B():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(32, 48))
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["0"],
                                                                 init_lora_weights=False))  # random B: a real test
    peft_layer = peft_model.base_model.model[0]
    ours = LoRALinear(copy.deepcopy(base[0]), r=4, alpha=8)
    with torch.no_grad():
        ours.lora_A.copy_(peft_layer.lora_A["default"].weight)
        ours.lora_B.copy_(peft_layer.lora_B["default"].weight)
    assert ours.scaling == peft_layer.scaling["default"] == 2.0
    x = torch.randn(3, 7, 32)
    assert_close(ours(x), peft_layer(x), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ours(x), base(x), atol=1e-3), "B must be non-zero for the comparison to mean anything"


def test_merged_layer_equals_unmerged_and_peft_merge():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(32, 48), r=4, alpha=8)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(6, 32)
    merged = layer.merged()
    assert isinstance(merged, nn.Linear) and not isinstance(merged, LoRALinear)
    assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)
    assert_close(layer.delta_weight(), 2.0 * layer.lora_B @ layer.lora_A)


def test_whole_model_matches_peft_before_and_after_merging():
    model = tiny_llama()
    targets = ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                                  init_lora_weights=False)).eval()
    ours = add_lora(copy.deepcopy(model), targets, r=8, alpha=16).eval()
    copied = 0
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            peft_layer = peft_model.base_model.model.get_submodule(name)
            with torch.no_grad():
                module.lora_A.copy_(peft_layer.lora_A["default"].weight)
                module.lora_B.copy_(peft_layer.lora_B["default"].weight)
            copied += 1
    assert copied == 2 * len(targets)
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable == peft_model.get_nb_trainable_parameters()[0] == 2 * 8 * ((64 + 64) + (64 + 32) + (128 + 64))  # r (in + out) per layer
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ours_logits, peft_logits = ours(ids).logits, peft_model(input_ids=ids).logits
        assert_close(ours_logits, peft_logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(peft_logits, model(ids).logits, atol=1e-3)
        merged_logits = peft_model.merge_and_unload()(ids).logits
    assert_close(merged_logits, ours_logits, rtol=1e-4, atol=1e-4)


def test_unknown_target_modules_list_the_names_that_exist():
    model = tiny_llama()
    assert linear_module_names(model) == ["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj",
                                          "up_proj", "v_proj"]
    with pytest.raises(ValueError) as error:
        check_target_modules(model, ["q_proj", "query", "value"])
    message = str(error.value)
    assert "['query', 'value'] match no linear layer of this LlamaForCausalLM" in message
    assert "'q_proj', 'up_proj', 'v_proj'" in message and "all-linear" in message
    check_target_modules(model, ["q_proj", "v_proj"])  # fine: no error
    check_target_modules(model, "all-linear")


def test_lora_param_formula_for_the_profiles_models_equals_peft():
    # memory.lora_params sizes the GPU runs from published shapes; check the formula on the shipped model's config
    import helpers
    from helpers import memory
    from transformers import AutoConfig, AutoModelForCausalLM

    model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(helpers.model_path(model_id)))
    shape = memory.MODEL_SHAPES[model_id]
    assert sum(p.numel() for p in skeleton.parameters()) == pytest.approx(shape["params"], rel=1e-3)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_count = get_peft_model(skeleton, LoraConfig(r=16, target_modules=targets)).get_nb_trainable_parameters()[0]
    assert memory.lora_params(shape, r=16) == peft_count
