"""Precision and mode: the states a trainer leaves a model in, and what scoring, generating and training need.

    with helpers.evaluating(model):       # eval mode, no gradients, autocast to the model's compute dtype
        logits = model(**batch).logits
    helpers.fp16_safe(trainer)            # right after building a TRL trainer on a 4-bit model with fp16=True
"""

import contextlib

import torch


def compute_dtype(model) -> torch.dtype | None:
    """The 16-bit dtype `model` computes in, or None for a float32 model.

    A 4-bit model computes in its quantization config's compute dtype. Otherwise the 16-bit dtype that holds most
    of the floating-point parameters. A trained QLoRA model mixes them: a float16 base with bfloat16 adapters (TRL
    casts them), float32 norms and output layer (peft's prepare_model_for_kbit_training).
    """
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    if quantization is not None:
        get = quantization.get if isinstance(quantization, dict) else lambda key: getattr(quantization, key, None)
        if get("load_in_4bit") and get("bnb_4bit_compute_dtype") is not None:
            dtype = get("bnb_4bit_compute_dtype")
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            return None if dtype == torch.float32 else dtype
        if get("load_in_8bit"):
            return torch.float16  # LLM.int8 computes its outliers in float16
    sizes = {}
    for p in model.parameters():
        if p.is_floating_point():
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel()
    half = {dtype: n for dtype, n in sizes.items() if dtype in (torch.float16, torch.bfloat16)}
    return max(half, key=half.get) if half else None


@contextlib.contextmanager
def evaluating(model):
    """Score or generate with `model` in whatever state a trainer left it, then give the state back.

    Inside: eval mode (no dropout; gradient checkpointing acts only in train mode, and there it makes generate drop
    its KV cache), no gradients, and autocast to the model's compute dtype when it has one, so that a float16 body,
    bfloat16 adapters and float32 norms meet in one dtype. A float32 model runs exactly as it is, even after a
    trainer with bf16=True or fp16=True: accelerate leaves that mixed precision wrapped around the model's forward
    (an autocast for good), and a float32 evaluation after training would otherwise silently run in 16-bit.
    """
    was_training = model.training
    dtype = compute_dtype(model)
    device_type = next(model.parameters()).device.type
    wrapped = model.__dict__.get("forward") if "_original_forward" in model.__dict__ else None
    model.eval()
    try:
        if wrapped is not None:
            model.forward = model._original_forward  # the forward from before accelerate's autocast wrapper
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield model
    finally:
        if wrapped is not None:
            model.forward = wrapped
        model.train(was_training)


def fp16_safe(trainer) -> int:
    """Take TRL's bfloat16 off a trainer's trainable parameters when it trains with fp16 (float16 mixed precision).

    TRL 1.16 casts every trainable parameter of a 4-bit or 8-bit model to bfloat16, whatever the config says (the
    QLoRA paper trains its adapters in bfloat16). A T4 has no bfloat16 and trains with fp16=True, whose gradient
    scaler cannot unscale bfloat16 gradients: the first optimizer step would fail with "not implemented for
    'BFloat16'". On a GPU they become float32 master weights again, as fp16 mixed precision expects. On a CPU
    (the t4-sim profile) accelerate runs fp16 without autocast or scaler, so a trainable head next to a float16 body
    must be float16 itself. With bf16 (an L4) or in float32 nothing changes. Returns how many tensors it cast.
    """
    if not trainer.args.fp16:
        return 0
    target = torch.float16 if trainer.args.device.type == "cpu" else torch.float32
    cast = 0
    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.to(target)
            cast += 1
    return cast


def check_fp16_trainable(model, fp16: bool) -> None:
    """Raise when fp16 training would meet a bfloat16 trainable parameter (the gradient scaler cannot unscale it)."""
    if not fp16:
        return
    bad = [name for name, p in model.named_parameters() if p.requires_grad and p.dtype == torch.bfloat16]
    if bad:
        raise TypeError(f"{len(bad)} trainable parameters are bfloat16 while fp16=True (first: {bad[0]}); float16 "
                        "mixed precision cannot unscale their gradients. Call helpers.fp16_safe(trainer) after "
                        "building the trainer.")
