"""Back-of-the-envelope memory estimates, printed before a run and set beside what was measured after it.

    rule_of_thumb_gb(8.0e9, bits=4)     # ~4.8 GB to serve an 8B model in 4-bit
    training_memory_gb(...)             # weights + trainable state + activations, for a fine-tuning run
    kv_cache_gb(model_id, rows, tokens) # the KV cache of a batch being generated
"""

import torch


def rule_of_thumb_gb(params: float, bits: float, overhead: float = 1.2) -> float:
    """Memory to serve a model: params x (bits / 8) bytes, x 1.2 for activations, KV cache and runtime."""
    return params * bits / 8 * overhead / 1e9


def training_memory_gb(*, params: float, trainable: float, weight_bits: float, batch_size: int, seq_len: int,
                       hidden_size: int, num_layers: int, vocab_size: int, gradient_checkpointing: bool,
                       unquantized_params: float = 0, output_params: float = 0, activation_bytes: int = 2,
                       optimizer_bytes: float = 2.0) -> dict:
    """An estimate, in GB, of what one fine-tuning step holds in GPU memory (what torch allocates; the CUDA context
    adds about half a GB on top, which torch does not count).

    weights: the frozen base at weight_bits (4 for QLoRA, 16 or 32 otherwise), except `unquantized_params`
    (embeddings, output layer) that bitsandbytes leaves alone and prepare_model_for_kbit_training casts to float32;
    16-bit copy: autocast runs a float32 layer's matmul from a 16-bit copy of its weight, kept for the backward pass:
    the `output_params` of a float32 output layer (vocab x hidden), when the step computes in 16-bit;
    trainable: float32 weight + gradient (8 bytes) + optimizer states (8-bit Adam: 2 bytes, AdamW fp32: 8);
    activations: what backward needs, ~34 x seq x batch x hidden values per layer without checkpointing
    (Korthikanti et al. 2022, attention scores excluded as SDPA/flash attention never stores them), ~2 with it
    (only each layer's input is kept, the rest is recomputed);
    logits: per value the float32 logits, their log-softmax and its gradient (12 bytes), and in 16-bit also the
    16-bit logits and their gradient (4 more): batch x seq x vocab values, the largest single tensor of a step.
    """
    sixteen_bit = activation_bytes < 4
    weights = (params - unquantized_params) * weight_bits / 8 + unquantized_params * 4
    copy = output_params * activation_bytes if unquantized_params and sixteen_bit else 0
    trainable_state = trainable * (8 + optimizer_bytes)
    per_layer = (2 if gradient_checkpointing else 34) * seq_len * batch_size * hidden_size * activation_bytes / 2
    logits = batch_size * seq_len * vocab_size * (12 + (2 * activation_bytes if sixteen_bit else 0))
    parts = {"weights": weights, "16-bit copy of the output layer": copy,
             "trainable + grads + optimizer": trainable_state, "activations": per_layer * num_layers,
             "logits": logits}
    parts = {name: value / 1e9 for name, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


# Shapes of the Hub models the GPU profiles use, from their published config.json files, so a notebook running
# in the `cpu` profile (no Hub) can still size the T4 / L4 runs on paper.
MODEL_SHAPES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(params=134.5e6, hidden=576, layers=30, intermediate=1536,
                                                kv_dim=192, vocab=49152, tied=True),
    "HuggingFaceTB/SmolLM2-360M-Instruct": dict(params=361.8e6, hidden=960, layers=32, intermediate=2560,
                                                kv_dim=320, vocab=49152, tied=True),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": dict(params=1711.4e6, hidden=2048, layers=24, intermediate=8192,
                                                kv_dim=2048, vocab=49152, tied=True),
    "unsloth/Meta-Llama-3.1-8B-Instruct": dict(params=8030.3e6, hidden=4096, layers=32, intermediate=14336,
                                               kv_dim=1024, vocab=128256, tied=False),
}


def kv_cache_gb(model_id: str, rows: int, tokens: int, bytes_per_value: int = 2) -> float:
    """GB a KV cache holds for `rows` sequences of `tokens` positions each (prompt and answer): a key and a value of
    kv_dim numbers per position in every layer, bytes_per_value each (2 in 16-bit, 4 in float32). Generating, the
    cache is the memory that grows with the batch; `helpers.sample_answers` with rows_per_call=128 on a T4 holds at
    most kv_cache_gb("HuggingFaceTB/SmolLM2-1.7B-Instruct", 128, 70 + 144) = 5.4 GB (no grouped KV heads)."""
    shape = MODEL_SHAPES[model_id]
    return 2 * shape["layers"] * shape["kv_dim"] * bytes_per_value * rows * tokens / 1e9


def lora_params(shape: dict, r: int) -> int:
    """LoRA adapter size on all 7 linear layers of a Llama block: r x (d_in + d_out) each."""
    h, kv, inter = shape["hidden"], shape["kv_dim"], shape["intermediate"]
    per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + inter) * 2 + (inter + h))  # q,o + k,v + gate,up + down
    return per_layer * shape["layers"]


def lora_run_estimate(model_id: str, profile, sequences: int, seq_len: int | None = None) -> dict:
    """GB one LoRA (QLoRA when the profile loads in 4-bit) training step needs on `profile`'s card, on paper.

    sequences: forward+backward sequences per step (DPO: 2 x pairs; GRPO: prompts x generations).
    A LoRA policy's reference costs nothing extra: it is the same weights with the adapter switched off.
    """
    shape = MODEL_SHAPES[model_id]
    embedding = shape["vocab"] * shape["hidden"] * (1 if shape["tied"] else 2)
    four_bit = profile.load_in_4bit
    return training_memory_gb(
        params=shape["params"], trainable=lora_params(shape, profile.lora_r),
        weight_bits=4 if four_bit else 8 * profile.weights_dtype.itemsize,  # float32 on the cpu profile: 4 bytes
        unquantized_params=embedding if four_bit else 0, output_params=shape["vocab"] * shape["hidden"],
        activation_bytes=4 if profile.dtype == torch.float32 else 2,
        batch_size=sequences, seq_len=seq_len or profile.max_length,
        hidden_size=shape["hidden"], num_layers=shape["layers"], vocab_size=shape["vocab"],
        gradient_checkpointing=profile.gradient_checkpointing)
