"""Adapter files in PEFT's format, so that PEFT and this project can read each other's adapters.

A directory holds two files:
  adapter_config.json        {"peft_type": "LORA" | "HIRA", "r": ..., "target_modules": [...], ...}
  adapter_model.safetensors  one tensor per factor, named after the Hugging Face module it adapts:
      base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight    (LoRA: A, (r, in))
      base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight    (LoRA: B, (out, r))
      base_model.model.distilbert.transformer.layer.0.attention.q_lin.hira_A      (HiRA: no ".weight")

PEFT adds "base_model.model." in front of the model's own module names. Keys without that prefix make
PEFT warn and then silently run a no-op adapter, which is why the tests compare logits, not just
"it loaded". PEFT has no task type for masked-LM, so task_type is null.

Sparse LoRA is written as a plain LoRA: each module's zero-gate ranks are cut out, g and alpha/r are
folded into B, and the module's own rank goes into `rank_pattern` (its alpha into `alpha_pattern`,
equal to the rank, so PEFT's scaling is 1). Modules whose gates are all zero are left out.
"""

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from methods.base import AdapterError, replace_module
from methods.hira import HiRALinear
from methods.inject import AdapterConfig, adapter_layers, find_targets
from methods.lora import LoRALinear
from methods.sora import SoRALinear
from minibert.hub import read_json_object
from minibert.model import Bert
from minibert.weights import module_names

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
# Per peft_type: our factor's attribute name -> the end of its key in the file.
FACTOR_KEYS = {
    "LORA": {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"},
    "HIRA": {"hira_A": "hira_A", "hira_B": "hira_B"},
}

# Options of PEFT's configs that change the computation and are not implemented here: refused on load.
UNSUPPORTED = {
    "LORA": {"use_dora": False, "use_rslora": False, "bias": "none", "lora_bias": False, "fan_in_fan_out": False},
    "HIRA": {"fan_in_fan_out": False},
}
UNSUPPORTED_IF_SET = ("modules_to_save", "layers_to_transform", "layers_pattern", "trainable_token_indices")


def save_adapter(model: Bert, out_dir) -> Path:
    """Write the model's adapter as adapter_config.json + adapter_model.safetensors (PEFT format)."""
    config = getattr(model, "adapter_config", None)
    if config is None:
        raise AdapterError("this model has no adapter to save; call methods.apply(model, ...) first")
    hf_names = module_names(model.config)
    layers = {hf_names[name]: layer for name, layer in adapter_layers(model).items()}
    if any(layer.merged for layer in layers.values()):
        raise AdapterError("the adapters are merged into the base weights; call methods.unmerge(model) before saving")
    common = {
        "base_model_name_or_path": model.config.name_or_path or None,
        "task_type": None,  # PEFT has no task type for masked-LM
        "inference_mode": True,
        "fan_in_fan_out": False,
        "modules_to_save": None,
    }
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    if config.method == "hira":
        for hf, layer in layers.items():
            for factor, suffix in FACTOR_KEYS["HIRA"].items():
                tensors[f"{PREFIX}{hf}.{suffix}"] = getattr(layer, factor)
            if layer.r != config.r:
                rank_pattern[hf] = layer.r
        file_config = {
            "peft_type": "HIRA",
            "r": config.r,
            "hira_dropout": config.dropout,
            "init_weights": True,
            "target_modules": config.target_modules,
            "rank_pattern": rank_pattern,
        }
    else:
        target_modules = config.target_modules
        for hf, layer in layers.items():
            if isinstance(layer, SoRALinear):  # export the pruned adapter: rank nnz(g), scaling folded into B
                factors, r, alpha = layer.pruned_lora(), layer.rank(), layer.rank()
            else:
                factors, r, alpha = {"lora_A": layer.lora_A, "lora_B": layer.lora_B}, layer.r, layer.alpha
            if r == 0:
                continue  # every gate is zero: this module adds nothing
            for factor, suffix in FACTOR_KEYS["LORA"].items():
                tensors[f"{PREFIX}{hf}.{suffix}"] = factors[factor]
            if r != config.r:
                rank_pattern[hf] = r
            if alpha != config.alpha:
                alpha_pattern[hf] = alpha
        if config.method == "sparse_lora":
            target_modules = sorted({key[len(PREFIX) : -len(".lora_A.weight")] for key in tensors})  # the kept modules
            if not target_modules:
                raise AdapterError(
                    "every gate of the Sparse LoRA adapter is zero: it equals the base model, nothing to save"
                )
        file_config = {
            "peft_type": "LORA",
            "r": config.r,
            "lora_alpha": config.alpha,
            "lora_dropout": config.dropout,
            "target_modules": target_modules,
            "rank_pattern": rank_pattern,
            "alpha_pattern": alpha_pattern,
            "bias": "none",
            "use_rslora": False,
            "use_dora": False,
            "init_lora_weights": True,
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {key: t.detach().to("cpu", torch.float32).contiguous() for key, t in tensors.items()}
    write_atomically(out_dir / WEIGHTS_FILE, lambda path: save_file(weights, path, metadata={"format": "pt"}))
    text = json.dumps({**common, **file_config}, indent=2, sort_keys=True)
    write_atomically(out_dir / CONFIG_FILE, lambda path: Path(path).write_text(text + "\n", encoding="utf-8"))
    return out_dir


def load_adapter(model: Bert, directory) -> Bert:
    """Apply the adapter saved in `directory` (by save_adapter or by PEFT) to a base model, in place."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise AdapterError(
            f"{directory / CONFIG_FILE}: not found; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    config = read_json_object(directory / CONFIG_FILE, AdapterError)
    peft_type = config.get("peft_type")
    if peft_type not in UNSUPPORTED:
        raise AdapterError(
            f"{directory / CONFIG_FILE}: peft_type {peft_type!r} is not supported; "
            "this project reads LORA and HIRA adapters"
        )
    for option, default in UNSUPPORTED[peft_type].items():
        if config.get(option, default) != default:
            raise AdapterError(
                f"{directory / CONFIG_FILE}: {option}={config[option]!r} is not supported (only {default!r})"
            )
    for option in UNSUPPORTED_IF_SET:
        if config.get(option):
            raise AdapterError(f"{directory / CONFIG_FILE}: {option} is not supported")
    r = config.get("r", 8)
    dropout = config.get("hira_dropout" if peft_type == "HIRA" else "lora_dropout", 0.0)
    alpha = config.get("lora_alpha", 8)
    targets = config.get("target_modules")
    try:
        layers = find_targets(model, targets)
    except AdapterError as e:
        raise AdapterError(f"{directory / CONFIG_FILE}: {e}") from None
    hf_names = module_names(model.config)
    model.requires_grad_(False)  # only the adapters will be trainable
    for name in layers:
        hf = hf_names[name]
        layer_r = _pattern(config.get("rank_pattern"), hf, r)
        if peft_type == "HIRA":
            layer = HiRALinear(model.get_submodule(name), r=layer_r, alpha=alpha, dropout=dropout)
        else:
            layer = LoRALinear(
                model.get_submodule(name),
                r=layer_r,
                alpha=_pattern(config.get("alpha_pattern"), hf, alpha),
                dropout=dropout,
            )
        replace_module(model, name, layer)
    model.adapter_config = AdapterConfig("hira" if peft_type == "HIRA" else "lora", r, alpha, dropout, targets)
    _load_tensors(model, directory / WEIGHTS_FILE, FACTOR_KEYS[peft_type])
    return model


def _load_tensors(model: Bert, path: Path, factor_keys: dict[str, str]) -> None:
    """Fill every adapter factor from the file; every key must be used and every shape must match."""
    if not path.is_file():
        hint = (
            " (adapter_model.bin is a pickle and is not read: re-save it as safetensors)"
            if path.with_suffix(".bin").is_file()
            else ""
        )
        raise AdapterError(f"{path}: not found{hint}")
    hf_names = module_names(model.config)
    expected = {}
    for name, layer in adapter_layers(model).items():
        for factor, suffix in factor_keys.items():
            expected[f"{PREFIX}{hf_names[name]}.{suffix}"] = getattr(layer, factor)
    try:
        with safe_open(str(path), framework="pt") as f, torch.no_grad():
            keys = set(f.keys())
            unexpected, missing = sorted(keys - set(expected)), sorted(set(expected) - keys)
            if unexpected or missing:
                raise AdapterError(
                    f"{path}: keys do not match the adapter config: unexpected {unexpected[:3]}, missing {missing[:3]}"
                )
            for key, param in expected.items():
                tensor = f.get_tensor(key)
                if tensor.shape != param.shape:
                    raise AdapterError(
                        f"{path}: {key} has shape {tuple(tensor.shape)}, the config implies {tuple(param.shape)}"
                    )
                param.copy_(tensor)
    except AdapterError:
        raise
    except Exception as e:  # safetensors' own error type for a corrupt file
        raise AdapterError(f"{path}: not a readable safetensors file ({e})") from None


def _pattern(pattern: dict | None, hf_name: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: the first key that matches the end of the module name."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", hf_name):
            return value
    return default


def write_atomically(path: Path, write) -> None:
    """write(tmp_path), then rename over `path`: a crash never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
