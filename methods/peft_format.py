"""Adapter files in PEFT's format, so that PEFT and this project can read each other's adapters.

A directory holds two files:
  adapter_config.json        {"peft_type": "LORA" | "HIRA", "r": ..., "target_modules": [...], ...}
  adapter_model.safetensors  one tensor per factor, named after the Hugging Face module it adapts:
      base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight    (LoRA: A, (r, in))
      base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight    (LoRA: B, (out, r))
      base_model.model.distilbert.transformer.layer.0.attention.q_lin.hira_A      (HiRA: no ".weight")

PEFT adds "base_model.model." in front of the model's own module names. Keys without that prefix make
PEFT warn and then silently run a no-op adapter, which is why the tests compare logits, not just
"it loaded". PEFT has no task type for masked-LM, so task_type is null there.

A sequence classifier's adapter is PEFT's SEQ_CLS format: task_type "SEQ_CLS", `modules_to_save` naming the
head layers trained in full (BERT: classifier; DistilBERT: pre_classifier, classifier), and their
tensors stored whole under the module's own name:
      base_model.model.classifier.weight, base_model.model.classifier.bias
so that `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=K),
dir)` rebuilds the same classifier. PEFT cannot express a head trained alone (method "head": it refuses a
config that adapts no layer), so that baseline is saved as head_model.safetensors, the head's tensors
under their transformers names ("classifier.weight", ...): each one is a parameter of a transformers
classifier, `model.get_parameter(name)`, which raises for a name it does not have.

DoRA is a LORA adapter with "use_dora": true and one more tensor per module, its magnitude m (out,):
      base_model.model.bert.encoder.layer.0.attention.self.query.lora_magnitude_vector

Sparse LoRA is written as a plain LoRA: each module's zero-gate ranks are cut out, g and alpha/r are
folded into B, and the module's own rank goes into `rank_pattern` (its alpha into `alpha_pattern`,
equal to the rank, so PEFT's scaling is 1). Modules whose gates are all zero are left out.
"""

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from methods.base import AdapterError, replace_module
from methods.dora import DoRALinear
from methods.hira import HiRALinear
from methods.inject import AdapterConfig, adapter_layers, find_targets, hf_module_names, train_head
from methods.lora import LoRALinear
from methods.sora import SoRALinear
from minibert.classifier import trained_head
from minibert.files import write_atomically, write_text
from minibert.hub import read_json_object
from minibert.model import Encoder
from minibert.weights import module_names

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
HEAD_FILE = "head_model.safetensors"  # method "head": the classification head alone (see module doc)
PEFT_HEAD_NAMES = ("classifier", "score")  # PEFT adds these to a SEQ_CLS config's modules_to_save itself
PREFIX = "base_model.model."
# Per adapter kind: our factor's attribute name -> the end of its key in the file.
FACTOR_KEYS = {
    "LORA": {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"},
    "DORA": {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight", "lora_magnitude_vector": "lora_magnitude_vector"},
    "HIRA": {"hira_A": "hira_A", "hira_B": "hira_B"},
}

# Options of PEFT's configs that change the computation and are not implemented here: refused on load.
UNSUPPORTED = {
    "LORA": {"use_rslora": False, "bias": "none", "lora_bias": False, "fan_in_fan_out": False},
    "HIRA": {"fan_in_fan_out": False},
}
UNSUPPORTED_IF_SET = ("layers_to_transform", "layers_pattern", "trainable_token_indices")


def save_adapter(model: Encoder, out_dir) -> Path:
    """Write the model's adapter as adapter_config.json + adapter_model.safetensors (PEFT format), or a
    head-only run's head as head_model.safetensors."""
    config = getattr(model, "adapter_config", None)
    if config is None:
        raise AdapterError("this model has no adapter to save; call methods.apply(model, ...) first")
    if config.method == "full":
        raise AdapterError("a fully fine-tuned model has no adapter: save the whole model (minibert.save)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_names = module_names(model)
    head = {hf_names[name]: model.get_submodule(name) for name in trained_head(model)}  # HF name -> nn.Linear
    head_tensors = {f"{hf}.{n}": p for hf, layer in head.items() for n, p in layer.named_parameters()}
    if config.method == "head":
        save_tensors(out_dir / HEAD_FILE, head_tensors)
        return out_dir
    layers = {hf_names[name]: layer for name, layer in adapter_layers(model).items()}
    if any(layer.merged for layer in layers.values()):
        raise AdapterError("the adapters are merged into the base weights; call methods.unmerge(model) before saving")
    common = {
        "base_model_name_or_path": model.config.name_or_path or None,
        "task_type": "SEQ_CLS" if head else None,  # PEFT has no task type for masked-LM
        "inference_mode": True,
        "fan_in_fan_out": False,
        "modules_to_save": list(head) or None,
    }
    tensors = {f"{PREFIX}{key}": t for key, t in head_tensors.items()}  # the head, whole
    rank_pattern, alpha_pattern = {}, {}
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
        use_dora = config.method in ("dora", "qdora")
        factor_keys = FACTOR_KEYS["DORA" if use_dora else "LORA"]
        target_modules = config.target_modules
        for hf, layer in layers.items():
            if isinstance(layer, SoRALinear):  # export the pruned adapter: rank nnz(g), scaling folded into B
                factors, r, alpha = layer.pruned_lora(), layer.rank(), layer.rank()
            else:
                factors, r, alpha = {name: getattr(layer, name) for name in factor_keys}, layer.r, layer.alpha
            if r == 0:
                continue  # every gate is zero: this module adds nothing
            for factor, suffix in factor_keys.items():
                tensors[f"{PREFIX}{hf}.{suffix}"] = factors[factor]
            if r != config.r:
                rank_pattern[hf] = r
            if alpha != config.alpha:
                alpha_pattern[hf] = alpha
        if config.method == "sparse_lora":
            kept = [key for key in tensors if key.endswith(".lora_A.weight")]
            target_modules = sorted({key[len(PREFIX) : -len(".lora_A.weight")] for key in kept})  # the kept modules
            if not target_modules:
                lam = config.options.get("sparse_lambda")
                raise AdapterError(
                    f"every gate of the Sparse LoRA adapter is zero (sparse_lambda = {lam} pruned every rank): it "
                    "equals the base model, nothing to save. The gates were judged before the task's signal reached "
                    "them (a short run whose loss had not yet fallen) or the penalty is too strong: train again "
                    "longer (--max-steps), at a higher --lr, or with a smaller --sparse-lambda"
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
            "use_dora": use_dora,
            "init_lora_weights": True,
        }
    save_tensors(out_dir / WEIGHTS_FILE, tensors)
    text = json.dumps({**common, **file_config}, indent=2, sort_keys=True)
    write_text(out_dir / CONFIG_FILE, text + "\n")
    return out_dir


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    weights = {key: t.detach().to("cpu", torch.float32).contiguous() for key, t in tensors.items()}
    write_atomically(path, lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))


def load_adapter(model: Encoder, directory) -> Encoder:
    """Apply the adapter saved in `directory` (by save_adapter or by PEFT) to a base model, in place."""
    directory = Path(directory)
    head = trained_head(model)
    if head and (directory / HEAD_FILE).is_file() and not (directory / CONFIG_FILE).is_file():
        return _load_head_only(model, directory / HEAD_FILE, head)
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
    _check_base(model, directory / WEIGHTS_FILE, config.get("base_model_name_or_path"))
    _check_task(config, model, directory / CONFIG_FILE)
    use_dora = peft_type == "LORA" and bool(config.get("use_dora"))
    r = config.get("r", 8)
    dropout = config.get("hira_dropout" if peft_type == "HIRA" else "lora_dropout", 0.0)
    alpha = config.get("lora_alpha", 8)
    targets = config.get("target_modules")
    try:
        layers = find_targets(model, targets)
    except AdapterError as e:
        raise AdapterError(f"{directory / CONFIG_FILE}: {e}") from None
    hf_names = module_names(model)
    model.requires_grad_(False)  # only the adapters (and a classifier's head) will be trainable
    for name in layers:
        hf = hf_names[name]
        layer_r = _pattern(config.get("rank_pattern"), hf, r)
        if peft_type == "HIRA":
            layer = HiRALinear(model.get_submodule(name), r=layer_r, alpha=alpha, dropout=dropout)
        else:
            layer = (DoRALinear if use_dora else LoRALinear)(
                model.get_submodule(name),
                r=layer_r,
                alpha=_pattern(config.get("alpha_pattern"), hf, alpha),
                dropout=dropout,
            )
        replace_module(model, name, layer)
    train_head(model, head)
    method = "hira" if peft_type == "HIRA" else "dora" if use_dora else "lora"
    model.adapter_config = AdapterConfig(method, r, alpha, dropout, targets, {}, hf_module_names(model, head))
    _load_tensors(model, directory / WEIGHTS_FILE, FACTOR_KEYS["DORA" if use_dora else peft_type])
    return model


def _check_base(model: Encoder, path: Path, saved_from: str | None) -> None:
    """An adapter trained on another base model is said as such, before any other check: the architecture
    and hidden size it was trained on (read off its keys and its A's shape), against the model given."""
    c = model.config
    attention_a = re.compile(r"\.(query|key|value|q_lin|k_lin|v_lin)\.(lora_A\.weight|hira_A)$")  # A: (r, H)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            a = next((key for key in keys if attention_a.search(key)), None)
            hidden = f.get_slice(a).get_shape()[1] if a else None  # None: compare the architecture only
    except Exception:
        return  # no file, or a damaged one: _load_tensors says so
    arch = next((n for n in ("bert", "distilbert") if any(key.startswith(f"{PREFIX}{n}.") for key in keys)), c.arch)
    layers = [int(m.group(1)) for key in keys if (m := re.search(r"\.layer\.(\d+)\.", key))]
    if arch != c.arch or (hidden is not None and hidden != c.hidden_size) or max(layers, default=-1) >= c.num_layers:
        width = f", hidden size {hidden}" if hidden is not None else ""
        raise AdapterError(
            f"{path}: this adapter was trained on a {arch} model{width}, adapting layers up to {max(layers, default=0)}"
            f" (saved from {saved_from or 'an unnamed model'}); the model given is a {c.arch} model with "
            f"{c.num_layers} layers and hidden size {c.hidden_size}. Load the base model it was trained on"
        )


def _check_task(config: dict, model: Encoder, path: Path) -> None:
    """A SEQ_CLS adapter goes on a classifier, any other on a masked-LM model; modules_to_save is the head."""
    task_type = config.get("task_type")
    if model.task == "classification" and task_type != "SEQ_CLS":
        raise AdapterError(
            f"{path}: task_type {task_type!r} is not a classifier's adapter (SEQ_CLS); "
            "load the base model without num_labels"
        )
    if model.task != "classification" and task_type == "SEQ_CLS":
        raise AdapterError(
            f"{path}: a sequence-classification adapter (SEQ_CLS); load the base model with "
            "num_labels=K, e.g. minibert.from_pretrained(name, num_labels=2)"
        )
    head_names = set(hf_module_names(model, trained_head(model)))
    others = set(config.get("modules_to_save") or []) - head_names - set(PEFT_HEAD_NAMES)
    if others:
        raise AdapterError(
            f"{path}: modules_to_save {sorted(others)} is not supported; only the classification "
            f"head ({sorted(head_names)}) is trained in full here"
        )
    missing = head_names - set(config.get("modules_to_save") or []) - set(PEFT_HEAD_NAMES)
    if missing:
        raise AdapterError(
            f"{path}: modules_to_save lacks {sorted(missing)}, which a fine-tuned "
            f"{model.config.arch} classifier needs (it is not in the pre-trained checkpoint)"
        )


def _load_head_only(model: Encoder, path: Path, head: list[str]) -> Encoder:
    """Method "head": the head's tensors under their transformers names; everything else stays frozen."""
    model.requires_grad_(False)
    train_head(model, head)
    hf = dict(zip(head, hf_module_names(model, head), strict=True))
    expected = {f"{hf[n]}.{k}": p for n in head for k, p in model.get_submodule(n).named_parameters()}
    _copy_tensors(path, expected)
    model.adapter_config = AdapterConfig("head", 0, 0.0, 0.0, [], {}, list(hf.values()))
    return model


def _load_tensors(model: Encoder, path: Path, factor_keys: dict[str, str]) -> None:
    """Fill every adapter factor from the file; every key must be used and every shape must match."""
    if not path.is_file():
        hint = (
            " (adapter_model.bin is a pickle and is not read: re-save it as safetensors)"
            if path.with_suffix(".bin").is_file()
            else ""
        )
        raise AdapterError(f"{path}: not found{hint}")
    hf_names = module_names(model)
    expected = {}
    for name, layer in adapter_layers(model).items():
        for factor, suffix in factor_keys.items():
            expected[f"{PREFIX}{hf_names[name]}.{suffix}"] = getattr(layer, factor)
    for name in trained_head(model):  # a classifier's head, stored whole
        for key, param in model.get_submodule(name).named_parameters():
            expected[f"{PREFIX}{hf_names[name]}.{key}"] = param
    _copy_tensors(path, expected)


def _copy_tensors(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Copy the file's tensors into `expected` (key -> parameter): the same keys, the same shapes."""
    if not path.is_file():
        raise AdapterError(f"{path}: not found")
    try:
        with safe_open(str(path), framework="pt") as f, torch.no_grad():
            keys = set(f.keys())
            unexpected, missing = sorted(keys - set(expected)), sorted(set(expected) - keys)
            if unexpected or missing:
                raise AdapterError(
                    f"{path}: keys do not match the adapter config: unexpected {unexpected[:3]}, missing {missing[:3]}"
                    "; is this the base model the adapter was trained on?"
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
