"""DoRA: Weight-Decomposed Low-Rank Adaptation.

Liu, Wang, Yin, Molchanov, Wang, Cheng, Chen, "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024,
Section 4.1, Eq. 5. Every weight is a magnitude times a direction: W = m · V / ||V||_c, with m one
number per output unit and V / ||V||_c each output unit's weight row scaled to unit length. DoRA trains
the magnitude m outright and the direction with LoRA:

    W' = m · (W0 + s B A) / ||W0 + s B A||_c          s = alpha / r, as in LoRA       (Eq. 5)

||·||_c is the norm of each output unit's weights, over the input dimension (PEFT: `norm(dim=1)` of the
(out, in) weight). m starts at ||W0||_c and B at zero, so W' = W0 at step 0. Trainable parameters per
layer: LoRA's r (in + out), plus `out` for m.

Why: the paper finds that full fine-tuning changes magnitudes and directions in opposite senses, while
LoRA changes both together; giving the magnitude its own parameter lets DoRA learn like full fine-tuning.

The norm is a constant in the backward pass (Section 4.3, as PEFT does): ||W0 + s B A||_c is recomputed
every step from the current B and A, but no gradient flows through it. That saves forming the (out, in)
gradient of the norm, at no measured cost in accuracy (the paper's Table 6).

Computed per input x, with x' = dropout(x), as the paper's code and PEFT do:

    h = W0 x + b + (m / n - 1) ⊙ W0 x' + (m / n) ⊙ s B A x',       n = ||W0 + s B A||_c

which is W' x + b when there is no dropout. When x' = x (evaluation, or dropout 0) W0 x is taken from the
base layer's output instead of being computed twice. The base may be a 4-bit Linear4bit (QLoRA's, then
"QDoRA"): W0 is its dequantised weight, and merging into it is refused as for QLoRA.
"""

import torch
import torch.nn as nn

from methods.lora import LoRALinear


class DoRALinear(LoRALinear):
    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float):
        super().__init__(base, r, alpha, dropout)
        self.lora_magnitude_vector = self.new_factor(base.out_features)  # m: (out,)
        with torch.no_grad():
            self.lora_magnitude_vector.copy_(self.weight_norm())  # m = ||W0||_c (B = 0 at step 0)

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """n = ||W0 + s B A||_c: the norm of each output unit's weights, (out,); a constant for autograd."""
        return torch.linalg.vector_norm(self.base_weight() + super().delta_weight(), dim=1)  # (out, in) -> (out,)

    def forward(self, x):
        h = self.base(x)  # W0 x + b   (..., out)
        if self.merged:  # W' already lives in the base weight
            return h
        scale = self.lora_magnitude_vector / self.weight_norm()  # m / n: (out,)
        bias = 0.0 if self.base.bias is None else self.base.bias
        if isinstance(self.dropout, nn.Identity) or not self.training:  # x' = x: W0 x' is h less its bias
            x_drop, w0_x = x, h - bias
        else:
            x_drop = self.dropout(x)
            w0_x = self.base(x_drop) - bias  # W0 x': one more matmul with W0   (..., out)
        lora = super().update(x_drop)  # s B A x'   (..., out)
        update = (scale - 1) * w0_x.to(scale.dtype) + scale * lora  # (m/n - 1) ⊙ W0 x' + (m/n) ⊙ s B A x'
        return h + update.to(h.dtype)

    def delta_weight(self):
        """ΔW = W' - W0 = (m / n) ⊙ (W0 + s B A) - W0, the rows scaled: (out, in)."""
        w0 = self.base_weight()
        scale = (self.lora_magnitude_vector / self.weight_norm())[:, None]  # (out, 1)
        return scale * (w0 + super().delta_weight()) - w0  # (out, 1) * (out, in) - (out, in)
