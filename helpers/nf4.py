"""NF4 and double quantization from scratch: what `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True)` does to every linear weight. Tests check each piece against bitsandbytes.

    codes, absmax = quantize_nf4(weight)                    # 4-bit codes + one float scale per 64 weights
    weight_hat = dequantize_nf4(codes, absmax, weight.shape)
    q_absmax, scales, offset = double_quantize(absmax)      # the scales themselves in 8 bits (block 256)

Codes are kept one per uint8 here for readability; bitsandbytes packs two codes into each byte.
"""

import torch


def nf4_codebook() -> torch.Tensor:
    """The 16 NormalFloat4 values, sorted, in [-1, 1]. Shape (16,).

    Idea: neural-network weights are roughly normal, so put the 16 levels at quantiles of N(0, 1), making each
    level equally likely to be used. 8 positive and 7 negative quantiles plus an exact 0 (zero padding and
    zero weights must stay exactly zero), divided by the largest so the extremes are exactly -1 and +1.
    `offset` = 0.9677 is the outermost quantile QLoRA uses (~1.85 standard deviations): the extreme level is
    the centre of the last bin rather than infinity.
    """
    offset = 0.9677083

    def normal_quantile(probabilities):  # inverse CDF of N(0, 1)
        return torch.special.ndtri(probabilities.double()).float()

    positive = normal_quantile(torch.linspace(offset, 0.5, 9)[:-1])  # 8 values, from ~1.85 sd down towards 0
    negative = -normal_quantile(torch.linspace(offset, 0.5, 8)[:-1])  # 7 values
    values = torch.cat([negative, torch.zeros(1), positive]).sort().values
    return values / values.max()


def fp4_codebook() -> torch.Tensor:
    """FP4 (E2M1: 1 sign, 2 exponent, 1 mantissa bit) scaled to [-1, 1]. Shape (15,): +0 and -0 coincide."""
    magnitudes = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]) / 6.0
    return torch.cat([-magnitudes.flip(0)[:-1], magnitudes])


def int4_codebook() -> torch.Tensor:
    """Plain symmetric integer quantization: 15 evenly spaced levels -7/7 ... 7/7. Shape (15,)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def quantize_blockwise(values: torch.Tensor, codebook: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax block quantization onto any codebook.

    values: any shape, numel divisible by block_size -> codes (numel,) uint8 indices into codebook,
    absmax (numel // block_size,) float32: each block is divided by its largest |value|, so it lies in [-1, 1],
    and every value is replaced by the index of the nearest codebook entry.
    """
    blocks = values.detach().float().reshape(-1, block_size)  # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks / absmax.clamp(min=1e-38)[:, None]  # in [-1, 1]; an all-zero block stays 0
    # nearest entry; ties go to the lower index, as bitsandbytes' bucketize does
    codes = (scaled.reshape(-1, 1) - codebook.reshape(1, -1)).abs().argmin(dim=1)
    return codes.to(torch.uint8), absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, codebook: torch.Tensor, shape,
                         block_size: int) -> torch.Tensor:
    """Inverse of quantize_blockwise: codebook value x block scale. Returns float32 of `shape`."""
    return (codebook[codes.long()].reshape(-1, block_size) * absmax[:, None]).reshape(shape)


def quantize_nf4(weight: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) -> codes (out*in,) uint8 in 0..15, absmax (out*in/block_size,) float32."""
    if weight.numel() % block_size:
        raise ValueError(f"{weight.numel()} values do not split into blocks of {block_size}.")
    return quantize_blockwise(weight, nf4_codebook(), block_size)


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor, shape, block_size: int = 64) -> torch.Tensor:
    """codes (numel,), absmax (numel/block_size,) -> float32 weight of `shape`."""
    return dequantize_blockwise(codes, absmax, nf4_codebook(), shape, block_size)


def unpack_bnb_codes(packed: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' packed 4-bit tensor (two codes a byte, the first in the high nibble) -> (numel,) uint8 codes."""
    flat = packed.flatten()
    return torch.stack([flat >> 4, flat & 0xF], dim=1).flatten()


def dynamic_8bit_codebook() -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic" data type, 256 sorted values in [-1, 1].

    A float-like code with a movable split between exponent and fraction: after the sign bit, the number of
    leading zero bits sets a power of ten (1e-6 ... 1) and the remaining bits a linear fraction in [0.1, 1].
    Small magnitudes get fewer, coarser steps; values near 1 get many fine ones. Used here for the absmax
    scales (double quantization), and by bitsandbytes' 8-bit optimizers for Adam states.
    """
    values = []
    for exponent in range(7):  # 10^-6 ... 10^0
        fraction_levels = 2 ** exponent + 1  # more levels left for the fraction as the exponent grows
        edges = torch.linspace(0.1, 1, fraction_levels, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2
        scale = 10.0 ** (exponent - 6)
        values += (scale * means).tolist() + (-scale * means).tolist()
    values += [0.0, 1.0]  # 254 + 2 = 256
    return torch.tensor(sorted(values), dtype=torch.float32)


def double_quantize(absmax: torch.Tensor, block_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize the first-level scales: absmax (n,) float32 -> (codes (n,) uint8, scales (n/256,), offset ()).

    The scales are all positive, so subtract their mean first (centred values use both signs of the 8-bit
    code), then absmax-quantize them in blocks of 256 with the dynamic 8-bit code. Per 64 weights this stores
    8 bits + 32/256 bits instead of 32 bits: 0.127 instead of 0.5 extra bits per weight.
    """
    offset = absmax.mean()
    padded = torch.nn.functional.pad(absmax - offset, (0, -absmax.numel() % block_size))  # last block may be short
    codes, scales = quantize_blockwise(padded, dynamic_8bit_codebook(), block_size)
    return codes[:absmax.numel()], scales, offset


def double_dequantize(codes: torch.Tensor, scales: torch.Tensor, offset: torch.Tensor,
                      block_size: int = 256) -> torch.Tensor:
    """Inverse of double_quantize: the first-level absmax scales, (n,) float32."""
    padded = torch.nn.functional.pad(codes, (0, -codes.numel() % block_size))
    values = dequantize_blockwise(padded, scales, dynamic_8bit_codebook(), (-1,), block_size)
    return values[:codes.numel()] + offset


def bits_per_weight(block_size: int = 64, double_quant: bool = True, block_size_2: int = 256) -> float:
    """Storage per weight: 4 bits of code plus the share of the scale(s) of its block."""
    scale_bits = 8 + 32 / block_size_2 if double_quant else 32
    return 4 + scale_bits / block_size
