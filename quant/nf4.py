"""NF4: 4-bit NormalFloat quantisation with double quantisation, as in QLoRA.

Dettmers, Pagnoni, Holtzman, Zettlemoyer, "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023,
Section 3 ("4-bit NormalFloat Quantization", "Double Quantization").

NormalFloat. Pre-trained weights are close to normally distributed, so the 16 levels of a 4-bit code
are placed at quantiles of N(0, 1), each covering about the same probability mass, then scaled to
[-1, 1]. To have an exact zero the code is asymmetric: 8 positive levels from quantiles of the upper
half, 7 negative ones from the lower half, and 0:

    positive: Φ⁻¹(p) for 8 points p evenly spaced from `offset` down to 0.5 (0.5 itself excluded)
    negative: -Φ⁻¹(p) for 7 points p evenly spaced from `offset` down to 0.5 (0.5 excluded)
    then everything is divided by the largest value, so the code spans exactly [-1, 1].

Φ⁻¹(1) is infinite, so the outermost quantile is taken at offset = 1 - (1/32 + 1/30) / 2 ≈ 0.9677083:
the mean of the last quantile positions of a 16-level and a 15-level grid, (1 - 1/32) and (1 - 1/30).
The reference code uses the 7-digit constant 0.9677083, and so do we: with the unrounded value four of
the levels differ in their last float32 bits.

Blockwise absmax. The flattened weight is cut into blocks of `blocksize` (64) values; each block is
divided by its absolute maximum (so it lies in [-1, 1]) and each value is replaced by the index of the
nearest level, an exact midpoint going to the lower level. Two 4-bit indices share a byte, the first
in the high nibble. Dequantising is code[index] * absmax[block].

Double quantisation. One float32 absmax per 64 weights costs 32/64 = 0.5 bit per weight. QLoRA
quantises those scales too: subtract their mean, then quantise them to 8 bits in blocks of 256 with
the signed dynamic-exponent code of Dettmers (2016), keeping one float32 scale per 256 absmaxes:

    bits per weight = 4 + 8/64 + 32/(64 * 256) = 4.127      instead of 4 + 32/64 = 4.5

All of this follows bitsandbytes (quantize_4bit / dequantize_4bit with quant_type="nf4"), the
reference QLoRA users compare against; the tests check the bytes are identical.
"""

import math
from dataclasses import dataclass

import torch


class QuantError(ValueError):
    """Input that cannot be quantised or dequantised; the message says what is wrong."""


NF4_OFFSET = 0.9677083  # 1 - (1/32 + 1/30) / 2 = 0.96770833..., rounded to 7 digits as in QLoRA's code
DOUBLE_QUANT_BLOCKSIZE = 256  # absmaxes per block of the second-level quantisation


def normal_float_code(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, ascending, float32, from -1.0 to 1.0 (derivation in the module docstring)."""
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())  # 8 quantiles above the median
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 below it
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


def dynamic_code() -> torch.Tensor:
    """The 256 levels of the signed 8-bit dynamic-exponent code (Dettmers 2016), ascending, float32.

    For exponent e = 0..6, 2^e levels spread linearly over (0.1, 1] * 10^(e-6), with their negatives,
    plus 0 and 1: tiny values keep relative precision, as in a float with a variable-length exponent.
    """
    levels = []
    for e in range(7):
        edges = torch.linspace(0.1, 1, 2**e + 1)  # float32, like the reference
        means = (edges[:-1] + edges[1:]) / 2
        levels += [(10 ** (e - 6)) * means, -(10 ** (e - 6)) * means]
    return torch.cat(levels + [torch.tensor([0.0, 1.0])]).sort().values


NF4_CODE = normal_float_code()
DYNAMIC_CODE = dynamic_code()


def blockwise_quantize(x: torch.Tensor, code: torch.Tensor, blocksize: int) -> dict[str, torch.Tensor]:
    """Nearest-level indices (uint8) of x scaled blockwise by its absmax, and the float32 absmaxes."""
    flat = x.reshape(-1).float()
    n_blocks = math.ceil(flat.numel() / blocksize)
    padded = torch.nn.functional.pad(flat, (0, n_blocks * blocksize - flat.numel()))  # zeros leave absmax alone
    blocks = padded.view(n_blocks, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1)  # x / absmax, in [-1, 1]
    midpoints = (code[:-1] + code[1:]) / 2
    index = torch.bucketize(scaled, midpoints)  # nearest level; a value on a midpoint goes to the lower one
    return {"index": index.view(-1)[: flat.numel()].to(torch.uint8), "absmax": absmax}


def blockwise_dequantize(index: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int):
    """code[index] * absmax[block], float32, flattened."""
    values = code[index.long()]  # (n,)
    return values * absmax.repeat_interleave(blocksize)[: values.numel()]


@dataclass
class NF4Tensors:
    """The stored form of one quantised weight (all that Linear4bit keeps of it)."""

    packed: torch.Tensor  # uint8, ceil(numel / 2): two 4-bit indices per byte, the first in the high nibble
    absmax: torch.Tensor  # float32 per block; or, with double quantisation, uint8 codes of (absmax - offset)
    absmax_scale: torch.Tensor | None  # double quantisation: float32 scale per 256 absmaxes, else None
    absmax_offset: torch.Tensor | None  # double quantisation: float32 mean of the absmaxes, else None
    shape: torch.Size  # shape of the original weight
    blocksize: int  # weights per absmax


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> "NF4Weight":
    """Quantise a float weight to NF4 (see the module docstring). Returns an NF4Weight."""
    if not torch.is_floating_point(w):
        raise QuantError(f"only float weights can be quantised, got {w.dtype}")
    if blocksize < 32 or blocksize & (blocksize - 1):
        raise QuantError(f"blocksize must be a power of two >= 32, got {blocksize}")
    if w.numel() == 0:
        raise QuantError("cannot quantise an empty tensor")
    q = blockwise_quantize(w, NF4_CODE.to(w.device), blocksize)
    index = torch.nn.functional.pad(q["index"], (0, w.numel() % 2), value=7)  # odd length: pad with level 7 (= 0.0)
    pairs = index.view(-1, 2)  # (ceil(n/2), 2)
    packed = (pairs[:, 0] << 4) | pairs[:, 1]  # first index in the high nibble
    absmax, scale, offset = q["absmax"], None, None
    if double_quant:
        offset = absmax.mean()
        q2 = blockwise_quantize(absmax - offset, DYNAMIC_CODE.to(w.device), DOUBLE_QUANT_BLOCKSIZE)
        absmax, scale = q2["index"], q2["absmax"]
    return NF4Weight(NF4Tensors(packed, absmax, scale, offset, w.shape, blocksize))


def nf4_levels(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """code[index] for each of the `numel` weights: unpack the two 4-bit indices of every byte (the first in
    the high nibble), then look each one up in the 16-level code. float32, (numel,)."""
    index = torch.stack([packed >> 4, packed & 0x0F], dim=1).view(-1)[:numel]  # (ceil(n/2), 2) -> (n,)
    return NF4_CODE.to(packed.device)[index.long()]  # (n,)


# An optimisation of nf4_levels, exact: every byte value -> its two levels (high nibble first), so one
# gather per byte fetches both. Each row of two float32 is viewed as one 8-byte integer: a 1-D gather of
# 8-byte items is the fastest on CPU. Measured on 2 threads: dequantising a 768 x 768 or 3072 x 768
# weight 2.6-2.8x faster than with nf4_levels (docs/api.md).
NF4_PAIRS = torch.stack([NF4_CODE.repeat_interleave(16), NF4_CODE.repeat(16)], dim=1)  # (256, 2) float32
NF4_PAIRS_AS_INT64 = NF4_PAIRS.view(torch.int64).view(256)  # the same bytes, one int64 per byte value


def nf4_levels_fast(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """nf4_levels, bit for bit, with one gather per byte instead of per weight (see NF4_PAIRS)."""
    pairs = NF4_PAIRS_AS_INT64.to(packed.device).index_select(0, packed.int())  # (ceil(n/2),) 8 bytes each
    return pairs.view(torch.float32)[:numel]  # (n,): two levels per byte, high nibble first


def dequantize_nf4(t: NF4Tensors, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight NF4Tensors stands for, in `dtype` (computed in float32, as bitsandbytes does)."""
    numel = math.prod(t.shape)
    if t.packed.dtype != torch.uint8 or t.packed.numel() != math.ceil(numel / 2):
        raise QuantError(
            f"{t.packed.numel()} packed {t.packed.dtype} values cannot hold a weight of shape {tuple(t.shape)} "
            f"({math.ceil(numel / 2)} uint8 bytes expected)"
        )
    absmax = t.absmax
    if t.absmax_scale is not None:  # undo double quantisation: absmax = code8[q] * scale[block] + offset
        absmax = blockwise_dequantize(absmax, t.absmax_scale, DYNAMIC_CODE.to(absmax.device), DOUBLE_QUANT_BLOCKSIZE)
        absmax = absmax + t.absmax_offset
    if absmax.numel() != math.ceil(numel / t.blocksize):
        raise QuantError(
            f"{absmax.numel()} block scales do not match shape {tuple(t.shape)} at blocksize {t.blocksize}"
        )
    values = nf4_levels_fast(t.packed, numel)  # (n,): code[index], the same as nf4_levels(t.packed, numel)
    n_blocks = absmax.numel()
    if numel != n_blocks * t.blocksize:  # a short last block: pad to whole blocks for the broadcast below
        values = torch.nn.functional.pad(values, (0, n_blocks * t.blocksize - numel))
    values = values.view(n_blocks, t.blocksize).mul_(absmax[:, None])  # code[index] * absmax[block]
    return values.view(-1)[:numel].view(t.shape).to(dtype)


class NF4Weight(torch.nn.Module):
    """A quantised weight as a module, so that .to(device) moves its tensors and they count as buffers."""

    def __init__(self, tensors: NF4Tensors):
        super().__init__()
        self.shape, self.blocksize = tensors.shape, tensors.blocksize
        self.register_buffer("packed", tensors.packed)
        self.register_buffer("absmax", tensors.absmax)
        self.register_buffer("absmax_scale", tensors.absmax_scale)
        self.register_buffer("absmax_offset", tensors.absmax_offset)

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def tensors(self) -> NF4Tensors:
        return NF4Tensors(self.packed, self.absmax, self.absmax_scale, self.absmax_offset, self.shape, self.blocksize)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_nf4(self.tensors(), dtype)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, blocksize={self.blocksize}, double_quant={self.double_quant}"
