"""methods: parameter-efficient fine-tuning of a minibert model, one method per file.

    import methods
    methods.apply(model, "lora", r=8, alpha=16, dropout=0.1, target_modules=None)  # in place; returns model
    trainable, total = methods.count_parameters(model)
    methods.save_adapter(model, out_dir)              # adapter_config.json + adapter_model.safetensors (PEFT format)
    model = methods.load_adapter(base_model, out_dir) # method and hyper-parameters come from the config
    methods.merge(model); methods.unmerge(model)      # fold the adapters into W0, and back exactly
    methods.merge_and_unload(model)                   # fold them in for good: the plain base architecture
    hooks = methods.training_hooks("lora", warmup_steps=100, total_steps=1000)  # what it adds to the loop

Files: base.py (the shared wrapper and merging), lora.py, sora.py (Sparse LoRA), hira.py, dora.py, qlora.py
(a 4-bit base under LoRA or DoRA), full.py (full fine-tuning, the reference: no adapter), inject.py
(choosing and replacing target modules), hooks.py (what a method adds to the training loop); and, for
the product rather than the lesson, peft_format.py (adapter files PEFT reads).
"""

from methods.base import AdapterError
from methods.inject import (
    METHODS,
    QUANTISED,
    AdapterConfig,
    apply,
    count_parameters,
    merge,
    merge_and_unload,
    training_hooks,
    unmerge,
)
from methods.peft_format import load_adapter, save_adapter
from methods.sora import gate_report, proximal_step, zero_gate_share

__all__ = [
    "METHODS",
    "QUANTISED",
    "AdapterConfig",
    "AdapterError",
    "apply",
    "count_parameters",
    "gate_report",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "proximal_step",
    "save_adapter",
    "training_hooks",
    "unmerge",
    "zero_gate_share",
]
