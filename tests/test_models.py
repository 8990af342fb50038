"""The offline models are the real pretrained ones: they answer and embed like the Hub models do."""
import pytest
import torch

import helpers
from helpers.models import model_path


def test_offline_smollm2_is_the_pretrained_instruct_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path("HuggingFaceTB/SmolLM2-135M-Instruct", prefer_hub=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert not hasattr(model.config, "quantization_config")  # plain float32 weights: trainable
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])


def test_offline_minilm_embeds_meaning():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path("sentence-transformers/all-MiniLM-L6-v2", prefer_hub=False), device="cpu")
    emb = model.encode(["A kitten sleeps on the sofa.", "A small cat naps on the couch.", "Stock prices fell."],
                       convert_to_tensor=True, normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert (emb[0] @ emb[1]).item() > (emb[0] @ emb[2]).item() + 0.3


def test_a_hub_only_model_without_the_hub_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"needs the Hugging Face Hub.*COURSE_PROFILE=cpu"):
        model_path("meta-llama/Llama-3.1-8B-Instruct", prefer_hub=False)


def test_with_the_hub_the_hub_id_is_used():
    assert model_path("HuggingFaceTB/SmolLM2-135M-Instruct", prefer_hub=True) == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_nf4_config_is_qloras_4bit_loading(dtype):
    """helpers.nf4_config: the config notebook 02 builds field by field, which the later notebooks load with."""
    from transformers import BitsAndBytesConfig

    spelled_out = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                     bnb_4bit_compute_dtype=dtype)
    assert helpers.nf4_config(dtype).to_dict() == spelled_out.to_dict()
    assert helpers.nf4_config(dtype).bnb_4bit_compute_dtype == dtype
