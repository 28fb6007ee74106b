"""Sparse LoRA (SoRA): LoRA whose rank is learned, by gates that become exactly zero.

Ding, Lv, Wang, Chen, Li, Liu, Sun, "Sparse Low-rank Adaptation of Pre-trained Language Models",
EMNLP 2023, Section 3. LoRA with a gate vector g (r entries) between A and B:

    h = W0 x + b + (alpha / r) * B diag(g) A dropout(x)                     (Eq. 5, with LoRA's scaling)

and an L1 penalty λ ||g||_1 on the gates, optimised by a proximal gradient step (Eq. 6-7): after each
optimizer step, every gate is soft-thresholded,

    g <- sign(g) * max(|g| - ξ, 0),    ξ = η_t λ                            (Eq. 7)

with η_t that step's size. A gate that crosses zero is set to *exactly* 0, and the rank-1 component
B[:, i] A[i, :] it multiplies drops out of ΔW; nnz(g) is the module's effective rank. At export the zero
ranks are cut out and g and the scaling are folded into B: a plain, smaller LoRA (methods/peft_format.py).

Choices of this implementation, where the paper leaves them open (the measurements behind each are in
docs/sparse_lora.md):
  - g starts at ones, so at step 0 SoRA *is* LoRA, and λ = 0 is exactly LoRA with a per-rank scale
    (the official code, TsinghuaC3I/SoRA, starts from randn).
  - The threshold is taken in Adam's own metric. Eq. 7 is the step of plain gradient descent; under
    AdamW every gate moves by about lr whatever its gradient, so a fixed ξ = lr λ prunes by the summed
    learning rate, not by need. We use the proximal step with Adam's diagonal preconditioner (Yun,
    Lozano, Yang, NeurIPS 2021, Eq. 3 with C = diag(sqrt(v̂) + ε)):

        g <- sign(g) * max(|g| - lr * λ / (sqrt(v̂) + ε), 0)       v̂: AdamW's bias-corrected E[(∂L/∂g)^2]

    Its fixed points are those of L + λ ||g||_1, whatever the learning rate, schedule or run length: a
    gate stays non-zero only while the mean loss gradient on it reaches λ. λ is the least marginal gain
    (loss per unit of gate) that keeps a rank, and means the same on a short run and a long one.
  - The gates learn GATE_LR_SCALE = 10 times faster than A and B, in their own AdamW group without
    weight decay (as SoRA's code has its own `sparse_lr`): the fixed points do not depend on the rate,
    but the time to reach them does, and at lr the gates of a short run were still on their way down.
    The other side of the trade: a zero gate also stops its B and A from learning, so a rank cut before
    its B has grown stays cut.
  - Sparsification starts only after the learning-rate warm-up (train.py passes the step): at step 0
    B = 0, every gate's gradient is 0 and sqrt(v̂) ~ 0, and thresholding would remove every rank.
  - λ is in loss-gradient units, so a task's need is measured in its own loss: a short masked-LM run
    needs every rank, and the default keeps them all. λ = 0 switches sparsification off.
"""

import torch
import torch.nn as nn

from methods.base import AdapterError
from methods.lora import LoRALinear

DEFAULT_SPARSE_LAMBDA = 3e-4  # λ, in loss per unit of gate: the λ study on MiniLM (docs/results.md)
GATE_LR_SCALE = 10.0  # the gates' learning rate, in multiples of the adapters' (see the module docstring)


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
    def proximal_step(self, lr: float, grad_rms: torch.Tensor, eps: float = 1e-8) -> None:
        """Soft-threshold the gates: g <- sign(g) max(|g| - ξ, 0), ξ = lr λ / (sqrt(v̂) + ε) per gate.

        grad_rms: sqrt(v̂), AdamW's bias-corrected RMS of each gate's gradient, (r,)."""
        xi = lr * self.sparse_lambda / (grad_rms + eps)  # (r,): ξ = η λ / (sqrt(v̂) + ε)
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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups for the trainable parameters: the adapters (and a task head) with weight
    decay; SoRA's gates without it (the L1 penalty is theirs) and with "lr_scale" = GATE_LR_SCALE. The
    training loop sets each group's lr to the schedule's lr times its "lr_scale"."""
    params = [(name.split(".")[-1], p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n != "gate"], "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": [p for n, p in params if n == "gate"], "weight_decay": 0.0, "lr_scale": GATE_LR_SCALE},
    ]
    return [group for group in groups if group["params"]]


def proximal_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Soft-threshold every gate of the model in AdamW's metric; call right after optimizer.step(). Each
    gate uses the lr AdamW just stepped it with. A gate the optimizer has not stepped yet is left alone."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for layer in sora_layers(model).values():
        state = optimizer.state.get(layer.gate)
        if not state:
            continue
        group = groups[id(layer.gate)]
        _, beta2 = group["betas"]
        step = float(state["step"])
        grad_rms = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt()  # sqrt(v̂), bias-corrected as AdamW does
        layer.proximal_step(group["lr"], grad_rms, group["eps"])


def gate_report(model: nn.Module) -> list[dict]:
    """Per SoRA module: its effective rank nnz(g), its maximum rank r, and the fraction of zero gates."""
    return [
        {"module": name, "rank": layer.rank(), "r": layer.r, "zero_fraction": 1.0 - layer.rank() / layer.r}
        for name, layer in sora_layers(model).items()
    ]


def zero_gate_share(model: nn.Module) -> float:
    """The share of all the model's gates that are exactly zero."""
    layers = sora_layers(model).values()
    return 1.0 - sum(layer.rank() for layer in layers) / max(1, sum(layer.r for layer in layers))
