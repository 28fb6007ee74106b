"""Sparse LoRA (SoRA): LoRA whose rank is learned, by gates that become exactly zero.

Ding, Lv, Wang, Chen, Li, Liu, Sun, "Sparse Low-rank Adaptation of Pre-trained Language Models",
EMNLP 2023, Section 3. LoRA with a gate vector g (r entries) between A and B:

    h = W0 x + b + (alpha / r) * B diag(g) A dropout(x)                     (Eq. 5, with LoRA's scaling)

and an L1 penalty λ ||g||_1 on the gates, optimised by a proximal gradient step (Eq. 6-7): after each
optimizer step, every gate is soft-thresholded,

    g <- sign(g) * max(|g| - ξ, 0),    ξ = lr * λ                           (Eq. 7, ξ = η_t λ)

where lr is the learning rate of that step. A gate that crosses zero is set to *exactly* 0, and the
rank-1 component B[:, i] A[i, :] it multiplies drops out of ΔW. nnz(g) is the module's effective rank.
Unlike magnitude pruning, nothing regrows by accident: a zero gate only moves again if its gradient
outweighs the threshold. At export time the zero ranks are cut out and g and the scaling are folded
into B, giving a plain, smaller LoRA adapter (see methods/peft_format.py).

Choices of this implementation (documented because the paper leaves them open):
  - g starts at ones, so at step 0 SoRA *is* LoRA (the official code starts from randn; with ones,
    λ = 0 gives exactly LoRA with an extra trainable per-rank scale, and the sparsity comes from
    training rather than from the draw).
  - With AdamW (as train.py uses, without weight decay on g) an optimizer step moves a gate by at most
    about lr, while the threshold takes lr * λ. So λ = 2 (the default) zeroes a gate whose gradient has
    no consistent sign once the summed learning rate reaches 1/2 (about 2/3 into a default 3-epoch
    WikiText-2 run), while a gate pushed consistently outward loses only (λ - 1) * lr per step and
    survives. λ = 0 switches sparsification off.
"""

import torch
import torch.nn as nn

from methods.base import AdapterError
from methods.lora import LoRALinear

DEFAULT_SPARSE_LAMBDA = 2.0  # λ: strength of the L1 penalty on the gates (see the module docstring)


class SoRALinear(LoRALinear):
    def __init__(
        self, base: nn.Linear, r: int, alpha: float, dropout: float, sparse_lambda: float = DEFAULT_SPARSE_LAMBDA
    ):
        super().__init__(base, r, alpha, dropout)
        if sparse_lambda < 0:
            raise AdapterError(f"sparse_lambda must be >= 0, got {sparse_lambda}")
        self.sparse_lambda = sparse_lambda
        self.gate = self.new_factor(r)  # g: (r,)
        nn.init.ones_(self.gate)

    def update(self, x):
        x = x.to(self.lora_A.dtype)
        # (alpha/r) B diag(g) A x: scale each of the r channels of A x by its gate.
        return ((x @ self.lora_A.T) * self.gate) @ self.lora_B.T * self.scaling  # (..., in) -> (..., r) -> (..., out)

    def delta_weight(self):
        return self.scaling * ((self.lora_B * self.gate) @ self.lora_A)  # (alpha/r) B diag(g) A: (out, in)

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        xi = lr * self.sparse_lambda  # ξ = η_t λ
        self.gate.copy_(torch.sign(self.gate) * torch.clamp(self.gate.abs() - xi, min=0.0))  # soft threshold

    def rank(self) -> int:
        """Effective rank nnz(g): the number of rank-1 components still in use."""
        return int((self.gate != 0).sum())

    @torch.no_grad()
    def pruned_lora(self) -> dict[str, torch.Tensor]:
        """The same ΔW as a plain LoRA of rank nnz(g) and scaling 1:
        A' = A[kept], B' = (alpha/r) B[:, kept] diag(g[kept])."""
        kept = self.gate != 0
        return {
            "lora_A": self.lora_A[kept].clone(),  # (k, in)
            "lora_B": (self.lora_B[:, kept] * (self.scaling * self.gate[kept])).clone(),  # (out, k)
        }


def sora_layers(model: nn.Module) -> dict[str, SoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SoRALinear)}


def proximal_step(model: nn.Module, lr: float) -> None:
    """Soft-threshold every gate of the model; call right after optimizer.step() with that step's lr."""
    for layer in sora_layers(model).values():
        layer.proximal_step(lr)


def gate_report(model: nn.Module) -> list[dict]:
    """Per SoRA module: its effective rank nnz(g), its maximum rank r, and the fraction of zero gates."""
    return [
        {"module": name, "rank": layer.rank(), "r": layer.r, "zero_fraction": 1.0 - layer.rank() / layer.r}
        for name, layer in sora_layers(model).items()
    ]
