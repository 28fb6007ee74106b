"""Put a method into a model: replace the target nn.Linear modules by wrappers, freeze everything else.

Target modules are named as in the Hugging Face checkpoint, as PEFT names them: a target t selects
every linear layer whose HF module name is t or ends with "." + t. For BERT the layer names are
query, key, value, dense (attention output, intermediate, output, and the MLM head's transform);
for DistilBERT q_lin, k_lin, v_lin, out_lin, lin1, lin2, vocab_transform. `minibert.weights.module_names`
translates between those names and ours.

A sequence classifier's task head (BERT: `classifier`; DistilBERT: `pre_classifier` and `classifier`) is
new, so it is trained in full next to the adapters, as PEFT's `modules_to_save` does. The method "head"
trains that head alone, with no adapter: the linear-probe baseline that PEFT papers report; "full" trains
every weight, with no adapter either: the full fine-tuning reference (methods/full.py).
"""

import inspect
import math
import re
from dataclasses import dataclass, field

import torch.nn as nn

from methods.base import AdapterError, AdapterLinear, replace_module
from methods.dora import DoRALinear
from methods.full import train_everything
from methods.hira import HiRALinear
from methods.hooks import TrainingHooks
from methods.lora import LoRALinear
from methods.qlora import quantize_linears
from methods.sora import SoRAHooks, SoRALinear, Sparsify
from minibert.classifier import trained_head
from minibert.model import Encoder
from minibert.weights import module_names
from quant.linear4bit import Linear4bit
from quant.nf4 import NF4Weight

# method -> the wrapper it puts on each target layer; "head" and "full" put none (they train whole layers)
METHODS = {
    "lora": LoRALinear,
    "sparse_lora": SoRALinear,
    "hira": HiRALinear,
    "dora": DoRALinear,
    "qlora": LoRALinear,
    "qdora": DoRALinear,
    "head": None,
    "full": None,
}
QUANTISED = ("qlora", "qdora")  # methods whose base is quantised to NF4 first (methods/qlora.py)
DEFAULT_TARGETS = {"bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"]}  # as in the LoRA paper: W_q, W_v


@dataclass
class AdapterConfig:
    method: str  # a key of METHODS
    r: int  # rank of every adapter (before SoRA prunes it)
    alpha: float  # LoRA scaling numerator: the update is multiplied by alpha / r (unused by HiRA)
    dropout: float  # dropout on the adapter's input
    target_modules: list[str] | str  # HF module names or suffixes that were adapted (a str: one regex)
    options: dict = field(default_factory=dict)  # method-specific, e.g. {"sparse_lambda": 3e-4} for sparse_lora
    modules_to_save: list[str] = field(default_factory=list)  # HF names of the head layers trained in full


def apply(
    model: Encoder, method: str, r: int = 8, alpha: float = 16, dropout: float = 0.1, target_modules=None, **options
) -> Encoder:
    """Adapt `model` in place with `method` and return it. Only the adapter parameters stay trainable.

    method: a key of METHODS. target_modules: HF module names (see module doc and find_targets); None takes
    the architecture's default. A classifier's task head is made trainable too (see module doc).
    options: method-specific hyper-parameters, e.g. sparse_lambda for "sparse_lora", or blocksize,
    double_quant and compute_dtype for "qlora" and "qdora" (see methods/qlora.py).
    """
    if method not in METHODS:
        raise AdapterError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    head = trained_head(model)
    if method == "full":
        if options:
            raise AdapterError(f"method 'full' has no options, got {sorted(options)}")
        train_everything(model)
        model.adapter_config = AdapterConfig(method, 0, 0.0, 0.0, [], {}, hf_module_names(model, head))
        return model
    if method == "head":
        if not head:
            raise AdapterError("method 'head' trains a classification head; load the model with num_labels")
        if options:
            raise AdapterError(f"method 'head' has no options, got {sorted(options)}")
        model.requires_grad_(False)
        train_head(model, head)
        model.adapter_config = AdapterConfig(method, 0, 0.0, 0.0, [], {}, hf_module_names(model, head))
        return model
    cls = METHODS[method]
    takes_options = quantize_linears if method in QUANTISED else cls.__init__
    accepted = set(inspect.signature(takes_options).parameters) - {"self", "model", "base", "r", "alpha", "dropout"}
    unknown = set(options) - accepted
    if unknown:
        raise AdapterError(
            f"method {method!r} has no option(s) {sorted(unknown)}; it accepts {sorted(accepted) or 'none'}"
        )
    targets = target_modules if target_modules is not None else DEFAULT_TARGETS[model.config.arch]
    layers = find_targets(model, targets)
    model.requires_grad_(False)
    if method in QUANTISED:  # QLoRA is LoRA on a 4-bit base (QDoRA: DoRA): quantise every linear layer first
        quantize_linears(model, **options)
        options = {}
    for name in layers:
        replace_module(model, name, cls(model.get_submodule(name), r=r, alpha=alpha, dropout=dropout, **options))
    train_head(model, head)
    saved = hf_module_names(model, head)
    model.adapter_config = AdapterConfig(method, r, alpha, dropout, targets, dict(options), saved)
    return model


def training_hooks(method: str, warmup_steps: int, total_steps: int, sparsify: Sparsify | None = None) -> TrainingHooks:
    """What `method` adds to the training loop (methods/hooks.py) of a run of `total_steps`: Sparse LoRA its
    gates (and, given `sparsify`, its threshold raised in stages), the others nothing."""
    return SoRAHooks(warmup_steps, total_steps, sparsify) if method == "sparse_lora" else TrainingHooks()


def train_head(model: nn.Module, head: list[str]) -> None:
    """Make the task head's layers trainable (PEFT's modules_to_save); the rest stays as it is."""
    for name in head:
        model.get_submodule(name).requires_grad_(True)


def hf_module_names(model: nn.Module, ours: list[str]) -> list[str]:
    """The Hugging Face names of our modules `ours`."""
    names = module_names(model)
    return [names[name] for name in ours]


def find_targets(model: Encoder, targets) -> list[str]:
    """Our names of the linear layers whose HF name matches `targets`, with PEFT's rules: a list selects
    names equal to an entry or ending with "." + entry; a single string is a regular expression that
    the whole name must match."""
    if any(isinstance(m, AdapterLinear) for m in model.modules()):
        raise AdapterError("this model already has adapters; load a fresh base model to apply another")
    if not targets:
        raise AdapterError(f"target_modules must name at least one module, got {targets!r}")
    head = trained_head(model)  # trained in full, never adapted
    linear = {
        ours: hf
        for ours, hf in module_names(model).items()
        if isinstance(model.get_submodule(ours), (nn.Linear, Linear4bit))  # Linear4bit: an already quantised base
        and ours not in head
    }
    if isinstance(targets, str):
        matches = {targets: [ours for ours, hf in linear.items() if re.fullmatch(targets, hf)]}
    else:
        matches = {t: [ours for ours, hf in linear.items() if hf == t or hf.endswith("." + t)] for t in targets}
    unmatched = [t for t, found in matches.items() if not found]
    if unmatched:
        names = sorted({hf.rsplit(".", 1)[-1] for hf in linear.values()})
        raise AdapterError(
            f"target module(s) {unmatched} match no linear layer of this {model.config.arch} model; "
            f"its layer names are {names} (a dotted suffix such as {next(iter(linear.values()))!r} also works)"
        )
    return [ours for ours in linear if any(ours in found for found in matches.values())]


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each tensor counted once (the tied decoder is not a copy).

    A 4-bit weight (QLoRA) is stored in buffers, not parameters; it counts as the weights it stands for.
    """
    params = list(model.parameters())
    quantised = sum(math.prod(m.shape) for m in model.modules() if isinstance(m, NF4Weight))
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params) + quantised


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W <- W0 + ΔW). Inference then costs the base model's."""
    for layer in adapter_layers(model).values():
        layer.merge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain nn.Linear back in its place (PEFT's
    merge_and_unload): what is left is the base architecture, with W0 + ΔW, and no way back."""
    for name, layer in adapter_layers(model).items():
        layer.merge()
        layer.weight_before_merge = None  # W0 is not needed again
        replace_module(model, name, layer.base)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo merge(): every base weight is restored exactly."""
    for layer in adapter_layers(model).values():
        layer.unmerge()
    return model
