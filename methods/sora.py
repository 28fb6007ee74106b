"""Sparse LoRA (SoRA): LoRA whose rank is learned, by gates that become exactly zero.

Ding, Lv, Wang, Chen, Li, Liu, Sun, "Sparse Low-rank Adaptation of Pre-trained Language Models",
EMNLP 2023, Section 3. LoRA with a gate vector g (r entries) between A and B:

    h = W0 x + b + (alpha / r) * B diag(g) A dropout(x)                     (Eq. 5, with LoRA's scaling)

and an L1 penalty λ ||g||_1 on the gates, optimised by a proximal gradient step (Eq. 6-7): after each
optimizer step, every gate is soft-thresholded,

    g <- sign(g) * max(|g| - ξ, 0),    ξ = η_t λ                            (Eq. 7)

where η_t is the step size of that step (for AdamW, see the choices below). A gate that crosses zero
is set to *exactly* 0, and the rank-1 component B[:, i] A[i, :] it multiplies drops out of ΔW. nnz(g)
is the module's effective rank. Unlike magnitude pruning, nothing regrows by accident: a zero gate only
moves again if its gradient outweighs the threshold. At export time the zero ranks are cut out and g and
the scaling are folded into B, giving a plain, smaller LoRA adapter (see methods/peft_format.py).

Choices of this implementation (the paper leaves them open; the official code, TsinghuaC3I/SoRA,
src/sparse_optimizer.py, subtracts a fixed threshold from the gates after every AdamW step):
  - g starts at ones, so at step 0 SoRA *is* LoRA (the official code starts from randn; with ones,
    λ = 0 gives exactly LoRA with an extra trainable per-rank scale, and the sparsity comes from
    training rather than from the draw).
  - The threshold is taken in Adam's own metric, not as lr * λ. Eq. 7 is the proximal step of plain
    gradient descent. Under AdamW (train.py trains the gates with it, without weight decay) a step moves
    every gate by about lr whatever the size of its gradient, since Adam divides by sqrt(v̂). A fixed
    ξ = lr * λ then decides by the summed learning rate, not by need: with λ = 2, nothing is pruned
    until Σ lr ≈ 1/2, and after that every gate goes, useful or not (a rank-3 target, r = 8: 8 gates
    kept after 300 steps, 3 after 3,000 but with the fit lost; tests/test_methods.py). So we use the
    proximal step with Adam's diagonal preconditioner (Yun, Lozano, Yang, "Adaptive Proximal Gradient
    Methods for Structured Neural Networks", NeurIPS 2021, Eq. 3 with C = diag(sqrt(v̂) + ε)):

        g <- sign(g) * max(|g| - lr * λ / (sqrt(v̂) + ε), 0)       v̂: AdamW's bias-corrected E[(∂L/∂g)^2]

    Its fixed points are those of L + λ ||g||_1 itself, whatever the learning rate, its schedule or the
    number of steps (they only set how fast the gates get there): a gate stays non-zero only while the
    mean gradient of the loss on it reaches λ, and a zero gate stays zero while |∂L/∂g| < λ. λ is the
    least marginal gain, in loss per unit of gate, that keeps a rank: it means the same on a short run
    and a long one. The same rank-3 target keeps exactly 3 gates after 300 and after 3,000 steps.
  - The gates learn GATE_LR_SCALE = 10 times faster than A and B (their own AdamW group, as SoRA's
    code gives them their own `sparse_lr`). The fixed points above do not depend on the learning rate,
    but the time to reach them does: an unneeded gate (|∂L/∂g| < λ) falls by lr λ / sqrt(v̂) per step,
    and at the card's lr 3e-4 a run of a few hundred steps ended with many gates still on their way
    down, pruned by how far they got rather than by need (on all-MiniLM-L6-v2, 300 steps, λ = 3e-3:
    46% zero with the gates at lr, 78% with them at 10 lr). At 10 lr the kept ranks settle within ~100
    steps after the warm-up and stay: at the default λ = 3e-4, 33% of the 96 gates are zero after 300
    steps (0.2 points below LoRA) and 36% after the card's full 846 (equal to LoRA), with the same
    modules pruned (README, "Results on a real pretrained encoder"). g is a per-rank scale of order 1,
    so steps of ~3e-3 on it are still small. The limit on the other side: a gate at zero also stops its
    B and A from learning, so a gate cut before its B has grown stays cut; too large a λ or too fast a
    gate removes ranks a task needs (the synthetic rank-3 layer of tests/test_methods.py keeps its 3
    ranks at λ = 3e-3 after 300 and 3,000 steps, and loses all at 1e-2).
  - Sparsification starts only after the learning-rate warm-up (train.py passes the step): at step 0
    B = 0, so every gate's gradient is 0 and sqrt(v̂) ~ 0, and thresholding then would remove every
    rank before any adapter had learnt anything. λ = 0 switches sparsification off.
  - λ is in loss-gradient units, so what a task needs is measured in its own loss: on a 200-step masked-LM
    run of MiniLM every rank's gradient is still large and λ = 3e-4 zeroes none. That run does need them
    all: LoRA with r = 6 in every module (a quarter fewer ranks, picked by hand) ends 3.5% above r = 8 in
    perplexity (126.5 vs 122.3), and r = 4 11% above (136.0). λ = 1e-2 zeroes a quarter and costs 10%
    (134.5); training the kept ranks without the penalty for the last quarter of the run (the relaxed
    lasso: Meinshausen, 2007; tried, not kept) still leaves 7% (24% zero, 130.9): the ranks it cuts
    first, within 40 steps of the warm-up's end, are all of layer 0's and layer 3's query, and a zero gate
    stops its B and A from learning, so an early cut is not undone. Cutting a quarter of a short MLM run's
    ranks is a trade of size for quality, not sparsity by need, so the default does not make it; a user
    who wants it raises λ.
"""

import torch
import torch.nn as nn

from methods.base import AdapterError
from methods.lora import LoRALinear

DEFAULT_SPARSE_LAMBDA = 3e-4  # λ, in loss per unit of gate: the λ study on MiniLM (README, real-encoder results)
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
