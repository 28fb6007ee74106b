"""How well a 4-bit code fits real weights: NF4 against FP4 and Int4 (QLoRA, Dettmers et al., NeurIPS 2023,
§3 "4-bit NormalFloat Quantization").

Every code here is 16 levels in [-1, 1] applied blockwise with absmax scaling (quant/nf4.py's
`blockwise_quantize`, blocks of 64): each block is divided by its largest |w|, each value replaced by the
nearest level, and multiplied back. They differ only in where the levels sit:

    NF4   quantiles of N(0, 1), so each level covers about the same share of normally distributed weights
    FP4   bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bit): ±{0, 0.0625, 2, 3, 4, 6, 8, 12}/12,
          dense near 0 and sparse near ±1
    Int4  evenly spaced, ±k/7 for k = 0..7 (15 levels, zero exact)

The paper's claim: pre-trained weights are close to normal, so NF4 (information-theoretically optimal for
normal data) quantises them with less error than FP4 or Int4. The error reported is the relative squared
error ||W - Q(W)||_F² / ||W||_F² per weight matrix.
"""

import torch

from quant.nf4 import NF4_CODE, blockwise_dequantize, blockwise_quantize

FP4_CODE = (torch.tensor([0, 0.0625, 2, 3, 4, 6, 8, 12], dtype=torch.float32) / 12).unique()
FP4_CODE = torch.cat([-FP4_CODE.flip(0)[:-1], FP4_CODE])  # both signs, one zero: 15 distinct levels
INT4_CODE = torch.arange(-7, 8, dtype=torch.float32) / 7
CODES = {"NF4": NF4_CODE, "FP4": FP4_CODE, "Int4": INT4_CODE}  # ascending, in [-1, 1]


def round_trip(w: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """Q(W): W quantised blockwise to `code` and back, the shape of W."""
    q = blockwise_quantize(w, code, blocksize)
    return blockwise_dequantize(q["index"], q["absmax"], code, blocksize).view(w.shape)


def relative_error(w: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> float:
    """||W - Q(W)||_F² / ||W||_F²."""
    w = w.float()
    return float(((w - round_trip(w, code, blocksize)) ** 2).sum() / (w**2).sum())
