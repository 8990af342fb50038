"""helpers/nf4.py against bitsandbytes' own NF4 (its CPU backend), value for value."""
import bitsandbytes.functional as bnbf
import pytest
import torch
from torch.testing import assert_close

from helpers.nf4 import (bits_per_weight, double_dequantize, double_quantize, dequantize_nf4, dynamic_8bit_codebook,
                         nf4_codebook, quantize_nf4, unpack_bnb_codes)


@pytest.fixture
def weight():
    torch.manual_seed(0)
    return torch.randn(384, 256) * 0.02  # (out, in), like a small linear layer


def test_codebook_is_bitsandbytes_nf4():
    codebook = nf4_codebook()
    assert codebook.shape == (16,)
    assert_close(codebook, bnbf.get_4bit_type("nf4", device="cpu")[:16], rtol=0, atol=0)
    assert codebook[0] == -1 and codebook[-1] == 1 and (codebook == 0).sum() == 1


def test_quantize_gives_bitsandbytes_codes_and_scales(weight):
    codes, absmax = quantize_nf4(weight, block_size=64)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    assert codes.dtype == torch.uint8 and codes.shape == (weight.numel(),)
    assert torch.equal(codes, unpack_bnb_codes(packed))
    assert_close(absmax, state.absmax, rtol=0, atol=0)


def test_dequantize_gives_bitsandbytes_weights(weight):
    codes, absmax = quantize_nf4(weight, block_size=64)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    ours = dequantize_nf4(codes, absmax, weight.shape, block_size=64)
    assert_close(ours, bnbf.dequantize_4bit(packed, state), rtol=1e-6, atol=1e-8)
    # and the reconstruction is close to the original: each value moves less than half the widest gap of a block
    widest_gap = (nf4_codebook().diff().max() / 2) * absmax.repeat_interleave(64).reshape(weight.shape)
    assert ((ours - weight).abs() <= widest_gap + 1e-7).all()


def test_dynamic_code_is_bitsandbytes_dynamic_map():
    assert_close(dynamic_8bit_codebook(), bnbf.create_dynamic_map(signed=True), rtol=0, atol=0)


def test_double_quantization_matches_bitsandbytes(weight):
    codes, absmax = quantize_nf4(weight, block_size=64)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
    q_absmax, scales, offset = double_quantize(absmax, block_size=256)
    assert_close(offset, state.offset, rtol=0, atol=0)
    assert_close(scales, state.state2.absmax, rtol=0, atol=0)
    # bitsandbytes' C kernel finds the nearest level with a lookup table that is exact except at near-ties: codes
    # may differ only there, by one step, where the value sits halfway (to 1% of the gap) between two levels
    differ = (q_absmax != state.absmax).nonzero().flatten()
    assert len(differ) <= 0.01 * len(absmax)
    levels = dynamic_8bit_codebook()
    for i in differ:
        value = (absmax[i] - offset) / scales[i // 256]
        ours, theirs = levels[q_absmax[i].long()], levels[state.absmax[i].long()]
        assert abs(int(q_absmax[i]) - int(state.absmax[i])) == 1
        assert abs(abs(value - ours) - abs(value - theirs)) < 0.01 * abs(ours - theirs)
    # the restored weights agree with bitsandbytes', and the scales lose very little
    restored = double_dequantize(q_absmax, scales, offset, block_size=256)
    assert_close(restored, absmax, rtol=0.02, atol=1e-4)
    ours = dequantize_nf4(codes, restored, weight.shape)
    theirs = bnbf.dequantize_4bit(packed, state)
    assert (ours - theirs).abs().max() < 0.01 * weight.abs().max()
    same_codes = torch.ones_like(absmax, dtype=torch.bool)
    same_codes[differ] = False
    block_matches = same_codes.repeat_interleave(64).reshape(weight.shape)
    assert_close(ours[block_matches], theirs[block_matches], rtol=1e-6, atol=1e-8)


def test_storage_cost_per_weight():
    assert bits_per_weight(64, double_quant=False) == 4.5
    assert bits_per_weight(64, double_quant=True) == pytest.approx(4.127, abs=1e-3)


def test_blocks_must_divide_the_weight():
    with pytest.raises(ValueError, match="do not split into blocks of 64"):
        quantize_nf4(torch.randn(10, 10))
