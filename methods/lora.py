"""LoRA: Low-Rank Adaptation.

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen, "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022, Section 4.1. The pre-trained weight W0 (out x in) stays frozen; its update is
constrained to a rank-r product ΔW = B A with B (out x r) and A (r x in), r << min(in, out):

    h = W0 x + b + (alpha / r) * B A dropout(x)                        (Eq. 3, with the scaling of 4.1)

A starts Kaiming-uniform (a = sqrt(5), the nn.Linear default) and B at zero, so ΔW = 0 and the adapted
model is exactly the pre-trained one at step 0. The scaling alpha/r keeps the update's size roughly
independent of r, so alpha need not be retuned when r changes. Trainable parameters per layer:
r * (in + out), e.g. 8 * (768 + 768) = 12,288 for a 768 x 768 attention projection.
"""

import math

import torch.nn as nn

from methods.base import AdapterError, AdapterLinear


class LoRALinear(AdapterLinear):
    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float):
        super().__init__(base, dropout)
        if not isinstance(r, int) or r <= 0:
            raise AdapterError(f"r must be a positive integer, got {r!r}")
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.lora_A = self.new_factor(r, base.in_features)  # A: (r, in)
        self.lora_B = self.new_factor(base.out_features, r)  # B: (out, r), zero: ΔW = 0 at step 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def update(self, x):
        x = x.to(self.lora_A.dtype)
        # (alpha/r) B A x, as two thin matmuls; the (out, in) matrix B A is never formed.
        return (x @ self.lora_A.T) @ self.lora_B.T * self.scaling  # (..., in) -> (..., r) -> (..., out)

    def delta_weight(self):
        return self.scaling * (self.lora_B @ self.lora_A)  # ΔW = (alpha/r) B A: (out, r) @ (r, in) -> (out, in)
