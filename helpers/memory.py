"""Back-of-the-envelope memory estimates, printed before a run and set beside what was measured after it.

    rule_of_thumb_gb(8.0e9, bits=4)     # ~4.8 GB to serve an 8B model in 4-bit
    training_memory_gb(...)             # weights + trainable state + activations, for a fine-tuning run
"""


def rule_of_thumb_gb(params: float, bits: float, overhead: float = 1.2) -> float:
    """Memory to serve a model: params x (bits / 8) bytes, x 1.2 for activations, KV cache and runtime."""
    return params * bits / 8 * overhead / 1e9


def training_memory_gb(*, params: float, trainable: float, weight_bits: float, batch_size: int, seq_len: int,
                       hidden_size: int, num_layers: int, vocab_size: int, gradient_checkpointing: bool,
                       unquantized_params: float = 0, activation_bytes: int = 2, optimizer_bytes: float = 2.0) -> dict:
    """An estimate, in GB, of what one fine-tuning step holds in memory.

    weights: the frozen base at weight_bits (4 for QLoRA, 16 or 32 otherwise), except `unquantized_params`
    (embeddings, output layer) that bitsandbytes leaves alone and prepare_model_for_kbit_training casts to float32;
    trainable: float32 weight + gradient (8 bytes) + optimizer states (8-bit Adam: 2 bytes, AdamW fp32: 8);
    activations: what backward needs, ~34 x seq x batch x hidden values per layer without checkpointing
    (Korthikanti et al. 2022, attention scores excluded as SDPA/flash attention never stores them), ~2 with it
    (only each layer's input is kept, the rest is recomputed), plus float32 logits and their gradient.
    """
    weights = (params - unquantized_params) * weight_bits / 8 + unquantized_params * 4
    trainable_state = trainable * (8 + optimizer_bytes)
    per_layer = (2 if gradient_checkpointing else 34) * seq_len * batch_size * hidden_size * activation_bytes / 2
    logits = 2 * batch_size * seq_len * vocab_size * 4
    parts = {"weights": weights, "trainable + grads + optimizer": trainable_state,
             "activations": per_layer * num_layers + logits}
    parts = {name: value / 1e9 for name, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts
