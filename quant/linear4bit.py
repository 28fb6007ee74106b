"""Linear4bit: a frozen nn.Linear whose weight is stored in NF4 (QLoRA, Dettmers et al. 2023, Section 3).

    y = x W^T + b,   W = dequantize(W_nf4)  in compute_dtype, rebuilt at every forward pass

Only the 4-bit form is kept; the dequantised W exists during the matmul and is freed afterwards. The
storage is buffers, not parameters, so no optimizer can touch it and no gradient reaches it; the
gradient still flows to the input x, which is what LoRA factors on top of this layer need
(QLoRA Eq. 5-6: backpropagate through the frozen 4-bit weight into the adapters).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from quant.nf4 import NF4Weight, quantize_nf4


class Linear4bit(nn.Module):
    def __init__(self, weight_nf4: NF4Weight, bias: torch.Tensor | None, compute_dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = weight_nf4.shape
        self.weight_nf4 = weight_nf4
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True, compute_dtype: torch.dtype | None = None
    ) -> "Linear4bit":
        """Quantise `linear`'s weight. compute_dtype None: the dtype of the linear layer's weight."""
        weight = linear.weight.detach()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(quantize_nf4(weight, blocksize, double_quant), bias, compute_dtype or weight.dtype)

    def forward(self, x):
        w = self.weight_nf4.dequantize(self.compute_dtype)  # (out, in), transient
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return F.linear(x.to(self.compute_dtype), w, bias).to(x.dtype)  # (..., in) -> (..., out), in x's dtype

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute_dtype={self.compute_dtype}"
