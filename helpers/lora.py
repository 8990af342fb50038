"""LoRA from scratch, small enough to read, plus the checks a student needs before calling peft.

    layer = LoRALinear(nn.Linear(576, 576), r=8, alpha=16)   # W x + (alpha / r) * B A x, B starts at zero
    merged = layer.merged()                                  # a plain nn.Linear with W + (alpha / r) B A
    check_target_modules(model, ["q_proj", "v_proj"])        # clear error listing the names that do exist

tests/test_lora.py shows LoRALinear gives the same outputs as peft's LoRA layer holding the same A and B.
"""

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = W x + b + (alpha / r) * B (A x).

    A: (r, in_features), random like an nn.Linear init, so B A x starts with signal to learn from;
    B: (out_features, r), zeros, so at step 0 the layer is exactly the pretrained one.
    Only r * (in + out) numbers train instead of in * out.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)  # the pretrained weight stays frozen
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r  # keeps the update's size comparable when you change r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # the same init peft (and nn.Linear) use
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T  # (..., r) then (..., out): never forms B A
        return self.base(x) + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """The full-size update (alpha / r) B A, shape (out_features, in_features)."""
        return self.scaling * self.lora_B @ self.lora_A

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear with the update folded in: no extra latency at inference time."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           dtype=self.base.weight.dtype, device=self.base.weight.device)
        merged.weight.copy_(self.base.weight + self.delta_weight())
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model: nn.Module, target_modules: list[str], r: int = 8, alpha: float = 16) -> nn.Module:
    """Replace every nn.Linear whose name ends in one of target_modules with a LoRALinear; freeze the rest."""
    check_target_modules(model, target_modules)
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, r=r, alpha=alpha))
    return model


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct short names of the model's linear layers (what LoraConfig(target_modules=...) matches)."""
    linear_types = (nn.Linear,)
    try:  # 4-bit and 8-bit layers are Linear subclasses in recent bitsandbytes, but be explicit
        import bitsandbytes as bnb
        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    names = {name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, linear_types)}
    return sorted(names)


def check_target_modules(model: nn.Module, target_modules) -> None:
    """Raise a ValueError naming the target modules that match no layer, and listing the ones that exist."""
    if isinstance(target_modules, str):  # "all-linear" (peft's shortcut) or a regex: peft checks those itself
        return
    available = linear_module_names(model)
    missing = [name for name in target_modules if name not in available]
    if missing:
        raise ValueError(
            f"target_modules {missing} match no linear layer of this {type(model).__name__}. "
            f"Its linear layers are named: {available}. Pick from those (attention: q_proj/k_proj/v_proj/o_proj "
            f"in Llama-style models; MLP: gate_proj/up_proj/down_proj), or use target_modules=\"all-linear\"."
        )
