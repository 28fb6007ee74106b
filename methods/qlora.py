"""QLoRA: LoRA on top of a 4-bit base model.

Dettmers, Pagnoni, Holtzman, Zettlemoyer, "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023,
Section 3, Eq. 5:

    h = dequant(W0_nf4) x + b + (alpha / r) * B A dropout(x)

Every linear layer of the encoder (and the MLM head's transform, or BERT's frozen pooler) is replaced
by a frozen quant.Linear4bit holding its weight in NF4 with double quantisation; LoRA then goes on the target
modules exactly as in methods/lora.py (method "qdora": DoRA, methods/dora.py, as PEFT allows on a 4-bit
base). Gradients flow through the dequantised weights into the adapters, never into the 4-bit storage.
Embeddings, LayerNorms and biases are not quantised: they keep the model's dtype (bf16 in the QLoRA
recipe: load the model with dtype=torch.bfloat16). A classifier's task head, which is trained in full
(minibert.classifier.trained_head), stays an nn.Linear in float32, like the LoRA factors.

Merging into the 4-bit layer is refused: W0 + ΔW is no longer representable in 4 bits. `dequantize_linears`
turns the base back into full-precision layers holding dequant(W0_nf4), which LoRA then merges into (merge.py):
the model the adapter was trained with, not the original fp32 weights.
"""

import torch
import torch.nn as nn

from methods.base import replace_module
from minibert.classifier import trained_head
from quant.linear4bit import Linear4bit


def quantize_linears(
    model: nn.Module, blocksize: int = 64, double_quant: bool = True, compute_dtype: torch.dtype | None = None
) -> nn.Module:
    """Replace every nn.Linear of the model but the trained task head by a frozen Linear4bit, in place.

    blocksize: weights per absmax scale. double_quant: quantise the scales too (4.127 instead of 4.5 bits
    per weight). compute_dtype: dtype of the dequantised weight in the matmul; None is bf16 on CUDA,
    float32 elsewhere (CPUs are slow at bf16 matmuls).
    """
    head = trained_head(model)
    for name, module in list(model.named_modules()):
        if name in head:
            module.float()  # trained in full, so kept in full precision
        elif isinstance(module, nn.Linear):
            dtype = compute_dtype or (torch.bfloat16 if module.weight.is_cuda else torch.float32)
            replace_module(model, name, Linear4bit.from_linear(module, blocksize, double_quant, dtype))
    return model


def dequantize_linears(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every Linear4bit (a QLoRA base) by an nn.Linear holding W = dequant(W_nf4), in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Linear4bit):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(module.weight_nf4.dequantize(dtype))  # (out, in)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            replace_module(model, name, linear.requires_grad_(False))
    return model
