"""HiRA: Hadamard High-Rank Adaptation.

Huang, Li, Wei, Zhou, Jiang, Zhang, Wang, "HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for
Large Language Models", ICLR 2025, Section 3 (Eq. 4). The update is the frozen weight multiplied
element-wise (⊙, Hadamard product) by a low-rank product:

    ΔW = W0 ⊙ (B A),     h = W0 x + b + (W0 ⊙ (B A)) dropout(x)

with B (out x r) and A (r x in). B A has rank <= r, but rank(W0 ⊙ BA) <= rank(W0) * rank(BA), so the
update can have full rank while training exactly as many parameters as LoRA, r * (in + out). There is
no alpha/r scaling: W0 already sets the update's scale. As in PEFT's HiRA tuner, A starts
Kaiming-uniform and B at zero, so ΔW = 0 at step 0.

The price: W0 ⊙ BA is a dense (out x in) matrix that must be formed in every forward pass (LoRA's
B A x never is). Merging is W <- W0 ⊙ (1 + B A). W0's entries are small (~0.04 in a pre-trained BERT),
so the same step moves HiRA's update far less than LoRA's, hence its own DEFAULT_LR (why, and how it
was chosen: docs/training.md, "Learning rates").
"""

import math

import torch.nn as nn
import torch.nn.functional as F

from methods.base import AdapterError, AdapterLinear

DEFAULT_LR = 3e-3  # peak AdamW learning rate for HiRA when none is given: 10x LoRA's (see the module doc)


class HiRALinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        """alpha is accepted so that every method takes the same arguments, and not used: HiRA has no scaling."""
        super().__init__(base, dropout)
        if not isinstance(r, int) or r <= 0:
            raise AdapterError(f"r must be a positive integer, got {r!r}")
        self.r = r
        self.hira_A = self.new_factor(r, base.in_features)  # A: (r, in)
        self.hira_B = self.new_factor(base.out_features, r)  # B: (out, r), zero: ΔW = 0 at step 0
        nn.init.kaiming_uniform_(self.hira_A, a=math.sqrt(5))

    def update(self, x):
        return F.linear(x.to(self.hira_A.dtype), self.delta_weight())  # (W0 ⊙ BA) x: (..., in) -> (..., out)

    def delta_weight(self):
        return self.base.weight * (self.hira_B @ self.hira_A)  # W0 ⊙ (B A): (out, in) ⊙ ((out, r) @ (r, in))
