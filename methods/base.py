"""What every method here shares: a frozen nn.Linear plus a small trainable update.

    h = W0 x + b + update(dropout(x))

LoRA, Sparse LoRA and HiRA differ only in `update` (and in the equivalent dense matrix `delta_weight`,
the ΔW with update(x) = ΔW x). DoRA, whose update rescales W0 x as well, replaces `forward` too
(methods/dora.py). This base class holds what is the same for all of them: the frozen layer, the adapter
dropout, and merging:

    merge():   W <- W0 + ΔW     the adapter is folded in; inference costs exactly the base model
    unmerge(): W <- W0          the saved W0 is put back, bit for bit

W0 is copied on merge because W0 + ΔW - ΔW is not W0 in floating point; the copy costs one weight
matrix per adapted layer while merged, and is dropped by unmerge.
"""

import torch
import torch.nn as nn

from minibert.dropout import Dropout
from quant.linear4bit import Linear4bit


class AdapterError(ValueError):
    """A method, its arguments or an adapter file is not usable; the message says what and how to fix it."""


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` is, in the same train/eval mode (a fresh module is in train mode)."""
    parent, _, child = name.rpartition(".")
    new.train(model.get_submodule(name).training)
    setattr(model.get_submodule(parent), child, new)


class AdapterLinear(nn.Module):
    def __init__(self, base: nn.Module, dropout: float):
        """base: the frozen layer, an nn.Linear (or a quant.Linear4bit for QLoRA)."""
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise AdapterError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base.requires_grad_(False)  # W0 and b stay frozen
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight_before_merge = None  # W0 while merged, else None

    @property
    def merged(self) -> bool:
        return self.weight_before_merge is not None

    def new_factor(self, *shape) -> nn.Parameter:
        """A trainable adapter tensor on the base layer's device. Kept in float32 even for a bf16 base
        (the adapter is the part being trained, and is small)."""
        device = next(self.base.parameters(), next(self.base.buffers(), None)).device
        return nn.Parameter(torch.zeros(*shape, device=device, dtype=torch.float32))

    def base_weight(self) -> torch.Tensor:
        """W0 (out, in) in float32; a 4-bit base's dequantised weight."""
        if isinstance(self.base, Linear4bit):
            return self.base.weight_nf4.dequantize(torch.float32)
        return self.base.weight.float()

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """The method's contribution for an input x (..., in) -> (..., out), computed in the adapter's
        dtype. Defined by each method."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) matrix ΔW with update(x) = ΔW x. Defined by each method."""
        raise NotImplementedError

    def forward(self, x):
        h = self.base(x)  # W0 x + b   (..., out)
        if self.merged:  # ΔW already lives in the base weight
            return h
        return h + self.update(self.dropout(x)).to(h.dtype)  # h = W0 x + b + ΔW dropout(x)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            raise AdapterError("this layer is already merged; call unmerge() first")
        if not isinstance(self.base, nn.Linear):
            raise AdapterError(
                f"cannot merge into a {type(self.base).__name__}: W0 + ΔW is not 4-bit. Save the adapter and "
                "load it onto the full-precision base model to merge there"
            )
        weight = self.base.weight
        self.weight_before_merge = weight.detach().clone()
        weight.copy_(weight.float() + self.delta_weight().float())  # W <- W0 + ΔW (computed in fp32)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise AdapterError("this layer is not merged; nothing to unmerge")
        self.base.weight.copy_(self.weight_before_merge)  # W <- W0, exactly
        self.weight_before_merge = None
