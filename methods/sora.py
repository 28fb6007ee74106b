"""Sparse LoRA (SoRA): LoRA whose rank is learned, by gates that become exactly zero.

Ding, Lv, Wang, Chen, Li, Liu, Sun, "Sparse Low-rank Adaptation of Pre-trained Language Models",
EMNLP 2023, Section 3. LoRA with a gate vector g (r entries) between A and B, the gated forward:

    h = W0 x + b + (alpha / r) * B diag(g) A dropout(x)              (the gated forward, with LoRA's scaling)

and an L1 penalty on the gates, optimised by a proximal gradient step: after each optimizer step, every
gate is soft-thresholded,

    g <- sign(g) * max(|g| - ξ, 0)                                   (the proximal step, soft threshold T_ξ)

A gate that crosses zero is set to *exactly* 0, and the rank-1 component B[:, i] A[i, :] it multiplies
drops out of ΔW; nnz(g) is the module's effective rank. At export the zero ranks are cut out and g and the
scaling are folded into B: a plain, smaller LoRA (methods/peft_format.py).

The paper's rule, as the authors' code runs it (SoRARule's defaults, `--sora-rule paper`): g starts randn,
the loss gets c * Σ|g| / (number of gates) with c = 10, the gates learn at the adapters' rate, A and B
decay by 0.1, and ξ = 3e-4 from the first step. Under AdamW every gate moves by about lr whatever its
gradient, and B_i can grow as g_i shrinks, so a gate dies once the summed ξ reaches the size it was drawn
at: the ranks kept are mostly those drawn largest (tests/benchmarks/sora_survival.py).

This project's rule (`--sora-rule ours`, the default) is the paper plus the departures in OURS, each a
switch in DEPARTURES (`ours-settle` is ours without "settle", `paper+ones` the paper's with ones):
  - "ones": g starts at ones, so at step 0 SoRA *is* LoRA.
  - "adam_threshold": the proximal step in Adam's metric (Yun, Lozano, Yang, NeurIPS 2021, Eq. 3), so a
    gate is cut by need, not by the summed learning rate; --sparse-lambda is then λ (default 3e-3):

        g <- sign(g) * max(|g| - lr * λ / (sqrt(v̂) + ε), 0)       v̂: AdamW's bias-corrected E[(∂L/∂g)^2]

  - "no_l1": no L1 term in the loss (the threshold is the whole penalty).
  - "fast_gates": the gates learn GATE_LR_SCALE = 10 times faster than A and B.
  - "judge_late": no gate is judged in the run's first JUDGE_FROM. A gate's gradient is B_iᵀ ∂L/∂h times
    A_i x, small while B_i is: judged then, a rank the task needs is cut.
  - "regrowth": a cut rank's column of B keeps learning (a term with value 0), outside the kept ranks'
    output directions, so a rank cut too early can come back.
  - "settle": at SETTLE_FROM of the run the ranks are fixed: cut gates held at 0, the kept ones trained
    without the penalty (the relaxed lasso, Meinshausen 2007: select with it, then fit without it).
  - "train_weight_decay": A and B decay at train.py's --weight-decay (0.01), not the authors' 0.1.
"judge_after_fall" can be added: wait, too, for the training loss to fall by more than its noise.
On five converged GLUE tasks it exports 58% of LoRA's parameters, at LoRA's score on three and below it
on SST-2 and CoLA: no better than a smaller fixed LoRA. The measurements are in docs/sparse_lora.md.
"""

import math
import re
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn

from methods.base import AdapterError
from methods.hooks import TrainingHooks
from methods.lora import LoRALinear

DEFAULT_STRENGTH = {  # --sparse-lambda when none is given, by the threshold's form (SoRARule.threshold):
    "constant": 3e-4,  # ξ, the authors' (their GLUE scripts)
    "adam": 3e-3,  # λ, from the converged GLUE study (docs/sparse_lora.md)
}
DEFAULT_RULE = "ours"  # --sora-rule
START_SIGMAS = 4  # PruningStart's margin, in standard deviations: on a flat loss a false start every ~30,000 steps
GATE_LR_SCALE = 10.0  # the gates' learning rate under "fast_gates", in multiples of the adapters'
JUDGE_FROM = 0.25  # under "judge_late", the share of the run's steps before any gate is judged
SETTLE_FROM = 0.5  # under "settle", the share of the run after which the kept ranks are fixed


@dataclass(frozen=True)
class SoRARule:
    """How the gates start, learn and are cut. The defaults are the authors' code (the module doc)."""

    gate_init: str = "randn"  # g at step 0: "randn" (the authors) or "ones" (SoRA starts as LoRA)
    threshold: str = "constant"  # "constant": ξ = sparse_lambda; "adam": ξ_i = lr_g λ / (sqrt(v̂_i) + ε)
    l1: float = 10.0  # c: the loss gets c * Σ|g| / (number of gates); 0: no L1 term
    gate_lr_scale: float = 1.0  # the gates' learning rate, in multiples of the adapters'
    judge_after_fall: bool = False  # judge only after the warm-up and a fall of the loss (PruningStart)
    judge_from: float = 0.0  # the share of the run's steps before any gate is judged (0: from the first step)
    judge_until: float = 1.0  # the share after which no gate is judged: cut ranks stay cut, kept ones train freely
    regrow: bool = False  # a cut rank keeps learning through the ghost term, and may come back
    adapter_weight_decay: float | None = 0.1  # AdamW's weight decay on A, B (and a head); None: --weight-decay


PAPER = SoRARule()
DEPARTURES = {  # this project's departures from the paper: name -> (the field it sets, to what)
    "ones": ("gate_init", "ones"),
    "adam_threshold": ("threshold", "adam"),
    "no_l1": ("l1", 0.0),
    "fast_gates": ("gate_lr_scale", GATE_LR_SCALE),
    "judge_after_fall": ("judge_after_fall", True),
    "judge_late": ("judge_from", JUDGE_FROM),
    "settle": ("judge_until", SETTLE_FROM),
    "regrowth": ("regrow", True),
    "train_weight_decay": ("adapter_weight_decay", None),
}


OURS = ("ones", "adam_threshold", "no_l1", "fast_gates", "judge_late", "regrowth", "settle", "train_weight_decay")


def parse_rule(spec: str) -> SoRARule:
    """ "paper", "ours" (the paper with the departures in OURS), then any "+name" or "-name": e.g.
    "ours-regrowth"."""
    base, *changes = re.split(r"(?=[+-])", spec)
    if base not in ("paper", "ours"):
        raise AdapterError(f"Sparse LoRA rule {spec!r}: start with 'paper' or 'ours', e.g. 'ours-regrowth'")
    on = set(OURS) if base == "ours" else set()
    for change in changes:
        name = change[1:]
        if name not in DEPARTURES:
            raise AdapterError(f"Sparse LoRA rule {spec!r}: no departure {name!r}; choose from {', '.join(DEPARTURES)}")
        on = on | {name} if change[0] == "+" else on - {name}
    return replace(PAPER, **dict(value for name, value in DEPARTURES.items() if name in on))


def default_strength(rule: str = DEFAULT_RULE) -> float:
    """--sparse-lambda when none is given: the rule's own, in its threshold's units (ξ or λ)."""
    return DEFAULT_STRENGTH[parse_rule(rule).threshold]


class SoRALinear(LoRALinear):
    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        dropout: float,
        sparse_lambda: float | None = None,
        rule: str = DEFAULT_RULE,
        l1: float | None = None,
    ):
        super().__init__(base, r, alpha, dropout)
        self.rule = parse_rule(rule)  # l1: the L1 term's c instead of the rule's (None: the rule's)
        self.rule = self.rule if l1 is None else replace(self.rule, l1=l1)
        sparse_lambda = DEFAULT_STRENGTH[self.rule.threshold] if sparse_lambda is None else sparse_lambda  # by units
        if sparse_lambda < 0 or (l1 is not None and l1 < 0):
            raise AdapterError(f"sparse_lambda and l1 must be >= 0, got {sparse_lambda} and {l1}")
        self.sparse_lambda = sparse_lambda  # ξ, or λ under the "adam" threshold
        self.gate = self.new_factor(r)  # g: (r,)
        if self.rule.gate_init == "ones":
            nn.init.ones_(self.gate)
        else:
            nn.init.normal_(self.gate)  # g ~ N(0, 1), the authors' torch.randn

    def update(self, x):
        x = x.to(self.lora_A.dtype)
        a = x @ self.lora_A.T  # (..., in) -> (..., r)
        # (alpha/r) B diag(g) A x: scale each of the r channels of A x by its gate.
        out = (a * self.gate) @ self.lora_B.T  # (..., r) -> (..., out)
        dead = (self.gate == 0).detach()  # (r,): the cut ranks
        if self.rule.regrow and self.training and dead.any():
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
    def soft_threshold(self, xi) -> None:
        """g <- sign(g) max(|g| - ξ, 0); ξ a number or one per gate, (r,)."""
        self.gate.copy_(torch.sign(self.gate) * torch.clamp(self.gate.abs() - xi, min=0.0))

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


def rule_of(model: nn.Module) -> SoRARule:
    """The rule of the model's Sparse LoRA layers (apply gives them all the same one)."""
    return next(iter(sora_layers(model).values())).rule


def proximal_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[float] | None:
    """Soft-threshold every gate of the model by its rule's ξ; call right after optimizer.step(). Under the
    "adam" threshold each gate uses the lr AdamW just stepped it with. A gate not stepped yet is left alone.
    Returns [min, median, max] of the ξ applied."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    applied = []
    for layer in sora_layers(model).values():
        state = optimizer.state.get(layer.gate)
        if not state:
            continue
        if layer.rule.threshold == "constant":
            xi = torch.full_like(layer.gate, layer.sparse_lambda)  # (r,): ξ, the same for every gate
        else:
            group = groups[id(layer.gate)]
            _, beta2 = group["betas"]
            grad_rms = (state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).sqrt()  # sqrt(v̂), as AdamW's
            xi = group["lr"] * layer.sparse_lambda / (grad_rms + group["eps"])  # (r,): ξ = η λ / (sqrt(v̂) + ε)
        layer.soft_threshold(xi)  # g <- sign(g) max(|g| - ξ, 0)
        applied.append(xi.detach())
    return spread(torch.cat(applied)) if applied else None


def l1_term(model: nn.Module) -> torch.Tensor | float:
    """The authors' L1 term in the loss: c * Σ|g| / (number of gates); 0 when the rule has none."""
    layers = sora_layers(model).values()
    c = rule_of(model).l1
    if not c:
        return 0.0
    total = sum(layer.gate.abs().sum() for layer in layers)  # Σ|g| over every module's gates
    return c * total / sum(layer.r for layer in layers)


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


def gate_spread(model: nn.Module) -> dict:
    """[min, median, max] over the kept ranks of |g_i| and of ‖B_i‖ (the column of B the gate scales)."""
    gates, columns = [], []
    for layer in sora_layers(model).values():
        kept = layer.gate != 0
        gates.append(layer.gate.detach()[kept].abs())
        columns.append(layer.lora_B.detach()[:, kept].norm(dim=0))  # (k,): ‖B_i‖ per kept rank
    return {"abs_gate": spread(torch.cat(gates)), "b_norm": spread(torch.cat(columns))}


def spread(values: torch.Tensor) -> list[float] | None:
    """[min, median, max] of a 1-D tensor, None if it is empty."""
    if values.numel() == 0:
        return None
    return [values.min().item(), values.median().item(), values.max().item()]


def gate_map(model: nn.Module) -> str:
    """The kept ranks, one row per layer, one column per adapted module: e.g. "layer 0  query 8  value 5"."""
    rows: dict[str, list[str]] = {}
    for name, layer in sora_layers(model).items():
        block = re.search(r"layers\.(\d+)\.", name)
        row = f"layer {block.group(1)}" if block else "other"
        rows.setdefault(row, []).append(f"{name.split('.')[-1]} {layer.rank()}")
    return "\n".join(f"  {row:<9}" + "  ".join(cells) for row, cells in rows.items())


@dataclass(frozen=True)
class Sparsify:
    """The authors' sparsifying scheduler (their SparseAdamW's lambda_schedule="linear"): the run is cut into
    `stages` equal stages, and ξ rises linearly from the run's --sparse-lambda to `xi_max`, one value a stage,
    so that validating at the end of each stage traces score against kept parameters in one run."""

    xi_max: float  # ξ of the last stage
    stages: int  # how many values ξ takes, the first the run's own
    total_steps: int  # the run's length, cut into `stages` stages

    def xi(self, start: float, step: int) -> float:
        """ξ at `step`: start + (xi_max - start) * stage / (stages - 1), stage = step * stages // total_steps."""
        stage = min(step * self.stages // self.total_steps, self.stages - 1)
        return start + (self.xi_max - start) * stage / max(1, self.stages - 1)


class SoRAHooks(TrainingHooks):
    """Sparse LoRA in the training loop (methods/hooks.py), by its rule (SoRARule): the gates in an AdamW
    group of their own, the L1 term in the loss, the soft threshold after every optimizer step once the
    gates are judged, and their ranks in the log."""

    def __init__(self, warmup_steps: int, total_steps: int, sparsify: Sparsify | None = None):
        self.warmup_steps = warmup_steps  # under "judge_after_fall", no gate is judged during the warm-up
        self.total_steps = total_steps  # the run's length: under "judge_late" no gate is judged in its first share
        self.sparsify = sparsify  # ξ raised in stages over the run, or None: ξ as the layers were made with
        self.xi_start: float | None = None  # the layers' own ξ, where a schedule starts from
        self.start = PruningStart()  # under "judge_after_fall", when the training loss fell
        self.judged_from: int | None = None  # the first step any gate was judged at; None: not yet
        self.xi: list[float] | None = None  # [min, median, max] of the last ξ (constant, or per gate under "adam")
        self.settled: dict[str, list[bool]] | None = None  # under "settle", once fixed: each module's cut ranks

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The adapters (and a task head) with the rule's weight decay; the gates without it (the L1 penalty
        is theirs), at the rule's rate."""
        rule = rule_of(model)
        decay = weight_decay if rule.adapter_weight_decay is None else rule.adapter_weight_decay
        params = [(name.split(".")[-1], p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n != "gate"], "weight_decay": decay, "lr_scale": 1.0},
            {"params": [p for n, p in params if n == "gate"], "weight_decay": 0.0, "lr_scale": rule.gate_lr_scale},
        ]
        return [group for group in groups if group["params"]]

    def loss_term(self, model):
        return 0.0 if self.settled else l1_term(model)  # c Σ|g| / (number of gates); 0 under "no_l1"

    def after_step(self, model, optimizer, step, loss):
        rule = rule_of(model)
        if rule.judge_until < 1 and step >= rule.judge_until * self.total_steps:  # "settle": the ranks are fixed
            return self.hold_cut_ranks(model) if self.settled is not None else self.settle(model, step)
        fell = self.start.update(loss, warmed_up=step >= self.warmup_steps) if rule.judge_after_fall else True
        if not fell or step < rule.judge_from * self.total_steps:
            return None  # not yet: the paper judges from the first step
        first = self.judged_from is None
        self.judged_from = step if first else self.judged_from
        if self.sparsify:  # the stage's ξ, in every layer
            layers = sora_layers(model).values()
            self.xi_start = self.xi_start if self.xi_start is not None else next(iter(layers)).sparse_lambda
            for layer in layers:
                layer.sparse_lambda = self.sparsify.xi(self.xi_start, step)
        self.xi = proximal_step(model, optimizer)  # g <- T_ξ(g)
        if rule.judge_until < 1 and step + 1 >= rule.judge_until * self.total_steps:  # the last step judged: fix them
            return self.settle(model, step)
        if first and step > 0:
            return f"step {step}: Sparse LoRA starts judging its gates ({self.waited_for(rule)})"
        return None

    def settle(self, model: nn.Module, step: int) -> str:
        """Under "settle": the ranks cut now are cut for good (hold_cut_ranks), the kept ones are free."""
        self.settled = {name: (layer.gate == 0).tolist() for name, layer in sora_layers(model).items()}
        return f"step {step}: Sparse LoRA has fixed its ranks; the kept ones train without the penalty from now on"

    @torch.no_grad()
    def hold_cut_ranks(self, model: nn.Module) -> None:
        """Put back at 0 every gate cut when the ranks were fixed, which AdamW's step moved off it."""
        for name, layer in sora_layers(model).items():
            layer.gate.masked_fill_(torch.tensor(self.settled[name]), 0.0)  # g_i = 0 for every cut rank i

    def waited_for(self, rule: SoRARule) -> str:
        """Why judging started only now: the loss's fall, the rule's share of the run, or both."""
        reasons = [f"the training loss fell at step {self.start.started_at}"] if rule.judge_after_fall else []
        if rule.judge_from:
            reasons.append(f"{rule.judge_from:.0%} of the run has passed")
        return " and ".join(reasons)

    def log(self, model):
        layers = sora_layers(model).values()
        ranks = [layer.rank() for layer in layers]  # the gates over training, per module
        kept = sum(layer.rank() * (layer.lora_A.shape[1] + layer.lora_B.shape[0]) for layer in layers)  # A and B
        line = {"ranks": ranks, "kept_params": kept}  # kept_params: the exported adapter's A and B, head aside
        return line | ({"xi": next(iter(layers)).sparse_lambda} if self.sparsify else {})

    def report(self, model):
        return {
            "sparse_lora_gates": gate_report(model),  # effective rank per module
            "zero_gate_share": zero_gate_share(model),
            "pruning_started_at": self.judged_from,  # None: never judged (the training loss never fell)
            "gate_spread": gate_spread(model) | {"xi": self.xi},  # [min, median, max] at the end
        }

    def summary(self, model, metrics):
        share = metrics["exported_params"] / metrics["trainable_params"]
        return (
            f"Sparse LoRA kept {sum(row['rank'] for row in gate_report(model))} of "
            f"{sum(row['r'] for row in gate_report(model))} ranks ({100 * zero_gate_share(model):.1f}% of the gates "
            f"are zero); kept ranks per layer and module:\n{gate_map(model)}\n"
            f"exported {metrics['exported_params']:,} of {metrics['trainable_params']:,} trained parameters "
            f"({100 * share:.1f}%)"
        )

    def state_dict(self):
        return {
            "pruning": asdict(self.start),
            "judged_from": self.judged_from,
            "xi": self.xi,
            "xi_start": self.xi_start,
            "settled": self.settled,
        }

    def load_state_dict(self, state):
        self.start = PruningStart(**state["pruning"]) if "pruning" in state else PruningStart()
        self.judged_from = state.get("judged_from", self.start.started_at)  # older checkpoints: the fall's step
        self.xi, self.xi_start = state.get("xi"), state.get("xi_start")
        self.settled = state.get("settled")
