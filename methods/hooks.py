"""What a method adds to the training loop, behind one interface, so that the loop names no method.

train.py makes the same calls whatever the method:

    optimizer = AdamW(hooks.param_groups(model, weight_decay), ...)   # which tensors decay, and how fast
    loss = task_loss + hooks.loss_term(model)                # e.g. Sparse LoRA's L1 term on its gates
    optimizer.step()
    note = hooks.after_step(model, optimizer, step, loss)    # e.g. Sparse LoRA soft-thresholds its gates
    log_line |= hooks.log(model)                             # e.g. the ranks each module still uses
    metrics |= hooks.report(model)                           # at the end of the run
    print(hooks.summary(model, metrics))                     # e.g. the ranks each module kept

Most methods need none of it: LoRA, HiRA, DoRA, QLoRA, the head and full fine-tuning are trained by
AdamW alone, which is what this base class does. Sparse LoRA overrides it (methods/sora.py). A hook's
state goes into every checkpoint (state_dict, load_state_dict), so that a resumed run goes on exactly.
"""

import torch
import torch.nn as nn


class TrainingHooks:
    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """AdamW's parameter groups: every trainable tensor, with weight decay. "lr_scale" multiplies the
        schedule's learning rate for a group (train.py sets group["lr"] = lr * group["lr_scale"])."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay, "lr_scale": 1.0}]

    def loss_term(self, model: nn.Module) -> torch.Tensor | float:
        """What the method adds to the training loss. Nothing here."""
        return 0.0

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, loss: float) -> str | None:
        """Called right after every optimizer step with that step's index and training loss; may return one
        line to show. Nothing here."""
        return None

    def log(self, model: nn.Module) -> dict:
        """Extra fields for a line of train_log.jsonl. None here."""
        return {}

    def report(self, model: nn.Module) -> dict:
        """Extra fields for metrics.json at the end of the run. None here."""
        return {}

    def summary(self, model: nn.Module, metrics: dict) -> str:
        """Lines to show at the end of the run, given its metrics.json. None here."""
        return ""

    def state_dict(self) -> dict:
        """What a checkpoint must keep of this hook's state (JSON). Nothing here."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore state_dict()'s output on --resume."""
