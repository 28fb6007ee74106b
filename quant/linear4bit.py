"""Linear4bit: a frozen nn.Linear whose weight is stored in NF4 (QLoRA, Dettmers et al. 2023, Section 3).

    y = x W^T + b,   W = dequantize(W_nf4)  in compute_dtype, rebuilt at every forward pass

Only the 4-bit form is kept; the dequantised W exists during the matmul and is freed afterwards. The
storage is buffers, not parameters, so no optimizer can touch it and no gradient reaches it; the
gradient still flows to the input x, which is what LoRA factors on top of this layer need
(QLoRA Eq. 5-6: backpropagate through the frozen 4-bit weight into the adapters).

A plain F.linear(x, W) would keep the dequantised W alive until the backward pass (it needs W for
dL/dx = dL/dy W), so training would hold every weight in 16/32 bits again. DequantizedLinear instead
saves nothing but a reference to the 4-bit weight and dequantises it a second time in backward: a
little more compute for the memory QLoRA is about. That second W is made in the gradient's dtype, as
bitsandbytes does: under bf16 autocast the forward's matmul, and so its gradient, is bf16 even when
compute_dtype is fp32 (the CPU's).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from quant.nf4 import NF4Weight, quantize_nf4


class DequantizedLinear(torch.autograd.Function):
    """y = x W^T + b, W = dequantize(W_nf4); backward recomputes W instead of storing it."""

    @staticmethod
    def forward(ctx, x, weight_nf4: NF4Weight, bias, dtype):
        ctx.weight_nf4 = weight_nf4
        return F.linear(x, weight_nf4.dequantize(dtype), bias)  # (..., in) -> (..., out)

    @staticmethod
    def backward(ctx, grad_y):
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ ctx.weight_nf4.dequantize(grad_y.dtype)  # dL/dx = dL/dy W: (..., out) @ (out, in)
        return grad_x, None, None, None  # the 4-bit weight and the bias are frozen


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
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        y = DequantizedLinear.apply(x.to(self.compute_dtype), self.weight_nf4, bias, self.compute_dtype)
        return y.to(x.dtype)  # (..., out), in the input's dtype

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute_dtype={self.compute_dtype}"
