"""Sparse LoRA (SoRA): LoRA whose rank is learned, by gates that become exactly zero.

Ding, Lv, Wang, Chen, Li, Liu, Sun, "Sparse Low-rank Adaptation of Pre-trained Language Models",
EMNLP 2023, Section 3. LoRA with a gate vector g (r entries) between A and B, the gated forward:

    h = W0 x + b + (alpha / r) * B diag(g) A dropout(x)              (the gated forward, with LoRA's scaling)

and an L1 penalty λ ||g||_1 on the gates, optimised by a proximal gradient step: after each optimizer
step, every gate is soft-thresholded,

    g <- sign(g) * max(|g| - ξ, 0),    ξ = η_t λ                     (the proximal step, soft threshold T_ξ)

with η_t that step's size. A gate that crosses zero is set to *exactly* 0, and the rank-1 component
B[:, i] A[i, :] it multiplies drops out of ΔW; nnz(g) is the module's effective rank. At export the zero
ranks are cut out and g and the scaling are folded into B: a plain, smaller LoRA (methods/peft_format.py).

Choices of this implementation, where the paper leaves them open (the measurements behind each are in
docs/sparse_lora.md):
  - g starts at ones, so at step 0 SoRA *is* LoRA, and λ = 0 is exactly LoRA with a per-rank scale.
  - The threshold is taken in Adam's own metric. Under AdamW every gate moves by about lr whatever its
    gradient, so the paper's ξ = lr λ prunes by the summed learning rate, not by need. We use the
    proximal step with Adam's diagonal preconditioner (Yun, Lozano, Yang, NeurIPS 2021, Eq. 3):

        g <- sign(g) * max(|g| - lr * λ / (sqrt(v̂) + ε), 0)       v̂: AdamW's bias-corrected E[(∂L/∂g)^2]

    Its fixed points are those of L + λ ||g||_1 whatever the learning rate or run length: a gate stays
    non-zero only while the mean loss gradient on it reaches λ, the least gain (loss per unit of gate)
    that keeps a rank. λ = 0 switches sparsification off.
  - The gates learn GATE_LR_SCALE = 10 times faster than A and B, in their own AdamW group without weight
    decay: the fixed points do not depend on the rate, the time to reach them does.
  - Gates are judged only once the task has started to be learned: after the warm-up, and once the
    training loss has fallen by more than its own noise (PruningStart). A gate's gradient is B_iᵀ ∂L/∂h
    times A_i x, so while no rank's B has grown every gradient is ~0 and the threshold would cut every
    rank, however much the task will need it once its signal comes.
  - A cut rank keeps learning, so that one cut too early can come back: its column of B is trained as if
    its gate were 1 (a term with value 0 and that gradient), in the output directions the kept ranks do
    not span. It returns when its gain reaches λ. Without taking the kept directions out, every cut rank
    would learn the same residual as the kept ones and come back: nothing would be selected.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from methods.base import AdapterError
from methods.hooks import TrainingHooks
from methods.lora import LoRALinear

DEFAULT_SPARSE_LAMBDA = 3e-4  # λ, in loss per unit of gate: the λ study on MiniLM (docs/sparse_lora.md)
START_SIGMAS = 4  # PruningStart's margin, in standard deviations: on a flat loss a false start every ~30,000 steps
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
        a = x @ self.lora_A.T  # (..., in) -> (..., r)
        # (alpha/r) B diag(g) A x: scale each of the r channels of A x by its gate.
        out = (a * self.gate) @ self.lora_B.T  # (..., r) -> (..., out)
        dead = (self.gate == 0).detach()  # (r,): the cut ranks
        if self.training and dead.any():
            out = out + self.ghost(a.detach() * dead, dead)  # value 0: only a gradient for the cut ranks' B
        return out * self.scaling

    def ghost(self, a_dead: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """Zero in value; its gradient trains each cut rank's column of B as if its gate were 1, in the
        output directions the kept ranks do not span, so that a rank cut too early can come back."""
        q = torch.linalg.qr(self.lora_B[:, ~dead].detach()).Q  # (out, k): the kept ranks' output directions
        b_free = self.lora_B - q @ (q.T @ self.lora_B)  # (out, r): (I - Q Qᵀ) B, those directions taken out
        shadow = a_dead @ b_free.T  # (..., r) -> (..., out): the cut ranks as if their gates were 1
        return shadow - shadow.detach()

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


@dataclass
class PruningStart:
    """When the gates start being judged: after the warm-up, once the training loss has fallen by more
    than its noise, i.e. its 10-step mean (an EMA, β = 0.9) is START_SIGMAS standard deviations below its
    100-step mean (β = 0.99), in units of the deviation white noise of the loss's variance gives that gap."""

    fast: float = 0.0  # EMA of the loss, β = 0.9 (about 10 steps), before bias correction
    slow: float = 0.0  # EMA of the loss, β = 0.99 (about 100 steps), before bias correction
    noise: float = 0.0  # EMA (β = 0.99) of (ℓ_t - 2 ℓ_{t-1} + ℓ_{t-2})² / 6: the loss's variance per step
    last: float | None = None  # ℓ_{t-1}
    before_last: float | None = None  # ℓ_{t-2}
    steps: int = 0  # losses seen
    started_at: int | None = None  # the step pruning started at

    def update(self, loss: float, warmed_up: bool) -> bool:
        """Take this step's loss; True once pruning has started (it never stops)."""
        if self.before_last is not None:  # a second difference is blind to a steady trend, unlike the spread
            self.noise = 0.99 * self.noise + 0.01 * (loss - 2 * self.last + self.before_last) ** 2 / 6
        self.fast, self.slow = 0.9 * self.fast + 0.1 * loss, 0.99 * self.slow + 0.01 * loss
        self.before_last, self.last, self.steps = self.last, loss, self.steps + 1
        n = self.steps
        if self.started_at is None and warmed_up and n > 3:
            fast, slow = self.fast / (1 - 0.9**n), self.slow / (1 - 0.99**n)  # bias-corrected, as AdamW's
            variance = self.noise / (1 - 0.99 ** (n - 2))  # σ²
            if slow - fast > START_SIGMAS * math.sqrt(variance * mean_gap_variance(n)):
                self.started_at = n - 1  # this step's index (the first loss is step 0)
        return self.started_at is not None


def mean_gap_variance(n: int, a: float = 0.9, b: float = 0.99) -> float:
    """Var(slow - fast) / σ² for white noise: the two bias-corrected EMAs of n values weigh value i by
    w_i = (1-β) β^(n-i) / (1-β^n), so the gap has variance σ² Σ (w_i^b - w_i^a)²."""

    def cross(x, y):  # Σ_i w_i^x w_i^y
        return (1 - x) * (1 - y) / ((1 - x**n) * (1 - y**n)) * (1 - (x * y) ** n) / (1 - x * y)

    return cross(a, a) + cross(b, b) - 2 * cross(a, b)


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


class SoRAHooks(TrainingHooks):
    """Sparse LoRA in the training loop (methods/hooks.py): the gates in an AdamW group of their own, the
    proximal step after every optimizer step once the gates are judged, and their ranks in the log."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps  # no gate is judged during the warm-up (see PruningStart)
        self.start = PruningStart()  # when judging starts: once the training loss has fallen

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The adapters (and a task head) with weight decay; the gates without it (the L1 penalty is theirs)
        and GATE_LR_SCALE times faster."""
        params = [(name.split(".")[-1], p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n != "gate"], "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": [p for n, p in params if n == "gate"], "weight_decay": 0.0, "lr_scale": GATE_LR_SCALE},
        ]
        return [group for group in groups if group["params"]]

    def after_step(self, model, optimizer, step, loss):
        if not self.start.update(loss, warmed_up=step >= self.warmup_steps):
            return None
        proximal_step(model, optimizer)  # g <- sign(g) max(|g| - lr_g λ / sqrt(v̂), 0)
        if self.start.started_at == step:
            return f"step {step}: the training loss has fallen; Sparse LoRA starts judging its gates"
        return None

    def log(self, model):
        return {"ranks": [row["rank"] for row in gate_report(model)]}  # the gates over training, per module

    def report(self, model):
        return {
            "sparse_lora_gates": gate_report(model),  # effective rank per module
            "zero_gate_share": zero_gate_share(model),
            "pruning_started_at": self.start.started_at,  # None: the training loss never fell
        }

    def state_dict(self):
        return {"pruning": asdict(self.start)}

    def load_state_dict(self, state):
        self.start = PruningStart(**state["pruning"]) if "pruning" in state else PruningStart()
