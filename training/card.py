"""The model card (README.md) written into every finished run: the reference card's fields, each filled
with the value measured by that run (never "N/A"), and how to use the adapter with PEFT and with ours."""

METHOD_LINES = {
    "lora": "LoRA (Hu et al., ICLR 2022): h = W0 x + (alpha/r) B A x",
    "sparse_lora": "Sparse LoRA / SoRA (Ding et al., EMNLP 2023): gated LoRA whose gates are pruned to "
    "exact zeros by a proximal L1 step; saved as the pruned plain LoRA",
    "hira": "HiRA (Huang et al., ICLR 2025): h = W0 x + (W0 ⊙ B A) x",
    "qlora": "QLoRA (Dettmers et al., NeurIPS 2023): LoRA on an NF4 4-bit base",
    "dora": "DoRA (Liu et al., ICML 2024): h = m ⊙ (W0 + (alpha/r) B A) x / ||W0 + (alpha/r) B A||_c",
    "qdora": "QDoRA: DoRA (Liu et al., ICML 2024) on QLoRA's NF4 4-bit base",
    "head": "Classification head only (the linear-probe baseline): the encoder is frozen, no adapter",
    "full": "Full fine-tuning (Devlin et al., NAACL 2019), the reference: every weight trained, no adapter",
}


METRIC_TITLES = {
    "accuracy": "accuracy",
    "f1": "F1 (positive class)",
    "macro_f1": "macro F1",
    "matthews_correlation": "Matthews correlation",
    "pearson": "Pearson correlation",
    "spearman": "Spearman correlation",
    "mse": "mean squared error",
    "perplexity": "perplexity (masked tokens)",
    "top5_accuracy": "top-5 accuracy",
}

FORMAT = {"perplexity": ".3f"}  # digits shown; the rest .4f


def where_from(base_model: str) -> str:
    """train.py records a local base model by its absolute path and a hub model by its repo id."""
    return "a local folder" if base_model.startswith("/") else "the Hugging Face Hub"


def model_card(m: dict) -> str:
    h = m["hyperparameters"]
    kind = m["task_kind"]
    extra = ""
    if m["method"] == "sparse_lora":
        ranks = [g["rank"] for g in m["sparse_lora_gates"]]
        zero = 1 - sum(ranks) / sum(g["r"] for g in m["sparse_lora_gates"])
        when = ""  # a run from before the start was recorded says nothing about it
        if "pruning_started_at" in m:
            started = m["pruning_started_at"]
            when = "never: the training loss did not fall" if started is None else f"from step {started}"
            when = f"; gates judged {when}"
        rule = f"rule {h.get('sora_rule') or 'ours'}, ξ/λ = {h['sparse_lambda']}"  # older runs: ours, the only rule
        rule += f", L1 c = {h['sora_l1']}" if h.get("sora_l1") is not None else ""
        sparsity = f"{100 * zero:.1f}% of gates exactly zero ({rule}); ranks {ranks}{when}"
        extra = f"- **Sparsity:** {sparsity}\n"
    if m["method"] in ("qlora", "qdora"):
        extra = f"- **Quantisation:** NF4, block size {h['blocksize']}, double quant. {not h['no_double_quant']}\n"
    if m["method"] == "full":
        extra += "- **Checkpoints:** each holds the weights and AdamW's two moments of every parameter (3× the model)\n"
    elif kind != "mlm":
        extra += f"- **Trained in full:** {', '.join(f'`{n}`' for n in m['modules_to_save'])} (the task head)\n"
    memory = (
        "peak GPU memory allocated" if m["peak_memory_kind"] == "cuda_max_allocated" else "peak RSS of the CPU process"
    )
    targets = ", ".join(f"`{t}`" for t in m["target_modules"]) if isinstance(m["target_modules"], list) else "regex"
    unit = f"blocks of {h['max_seq_len']} tokens" if kind == "mlm" else "examples"
    steps = f"{m['steps']} steps of {h['batch_size']} × {m['world_size']} {unit}" + (
        f", stopped early (--patience {h['patience']})" if m.get("stopped_early") else ""
    )
    schedule = f"{h['warmup_steps']} warm-up steps, then linear decay"
    adapter = "" if m["method"] in ("head", "full") else f"- **Rank (r):** {h['r']}\n" \
        + (f"- **Alpha:** {h['alpha']}\n" if h.get("alpha") is not None else "") \
        + f"- **Target modules:** {targets}\n- **Dropout:** {h['dropout']}\n"  # fmt: skip
    pipeline = {"mlm": "fill-mask", "classification": "text-classification", "regression": "text-classification"}
    names = m.get("metric_names") or ["accuracy", "f1"]
    saved = "model" if m["method"] == "full" else "adapter"
    usage = full_usage(m, kind) if m["method"] == "full" else mlm_usage(m) if kind == "mlm" else \
        classification_usage(m, kind)  # fmt: skip
    return f"""---
base_model: {m["base_model"]}
library_name: {"transformers" if m["method"] == "full" else "peft"}
tags: [{m["method"]}, {pipeline[kind]}, {m["task"]}]
datasets: [{m.get("dataset", m["task"])}]
metrics: [{", ".join(names)}]
---

# {m["method"]} — {m["base_model"]} fine-tuned on {m.get("task_title", m["task"])}

{METHOD_LINES[m["method"]]}. Trained with minibert-peft (a from-scratch PyTorch implementation).

## Training configuration
- **Base model:** {m["base_model"]} ({m["architecture"]}; {where_from(m["base_model"])})
{adapter}{extra}- **Epochs:** {m["epochs"]:.2f} ({steps})
- **Learning rate:** {h["lr"]}, AdamW, weight decay {h["weight_decay"]}, {schedule}
- **Seed:** {h["seed"]}

## Results (measured)
| | |
| --- | --- |
| Total parameters | {m["total_params"]:,} |
| Trainable parameters | {m["trainable_params"]:,} ({m["trainable_percent"]:.3f}%) |
| Saved {saved} | {m["exported_params"]:,} parameters, {m["exported_file_bytes"] / 1e3:,.1f} kB |
| Model size in memory | {m["model_size_mb"]:.1f} MB |
{result_rows(m, kind, names)}| Training time | {m["train_time_s"]:.1f} s |
| Training throughput | {m["train_samples_per_s"]:.1f} samples/s, {m["train_tokens_per_s"]:,.0f} tokens/s |
| Memory | {"not measured" if m["peak_memory_mb"] is None else f"{m['peak_memory_mb']:.0f} MB ({memory})"} |
| Device | {m["device"]} × {m["world_size"]} |

{notes(m, kind)}
## Usage
{usage}"""


def result_rows(m: dict, kind: str, names: list[str]) -> str:
    """Test metrics per test split (MNLI: matched and mismatched), then the validation metric that chose the step."""
    rows = ""
    for split in m.get("test_splits", ["test"]):
        where = "Test" if split == "test" else f"Test ({split.removeprefix('test_')})"
        for name in names:
            if f"{split}_{name}" in m:
                rows += (
                    f"| {where} {METRIC_TITLES.get(name, name)} | {m[f'{split}_{name}']:{FORMAT.get(name, '.4f')}} |\n"
                )
        rows += f"| {where} loss | {m[f'{split}_loss']:.4f} |\n"
    if not m.get("test_splits", ["test"]):
        rows += "| Test | no test file was given: no test metrics |\n"
    chosen = "perplexity" if kind == "mlm" else names[0]
    rows += f"| Validation {METRIC_TITLES.get(chosen, chosen)} (best, step {m['best_step']}) | " \
            f"{m[f'validation_{chosen}']:{FORMAT.get(chosen, '.4f')}} |\n"  # fmt: skip
    return rows


def notes(m: dict, kind: str) -> str:
    if kind == "mlm":
        return """Perplexity is exp of the mean cross-entropy over the masked tokens, with the same fixed masks for
every method (15% of the tokens; 80% [MASK], 10% random, 10% unchanged).
"""
    tests = ", ".join(f"{m[f'{split}_source']} ({m[f'{split}_examples']:,} examples)" for split in m["test_splits"])
    labels = f"Labels: {', '.join(m['label_names'])}." if kind == "classification" else "One score per example."
    return f"""Test split: {tests or "none (no test file)"}; validation: {m["validation_examples"]:,} examples. {labels}
"""


def full_usage(m: dict, kind: str) -> str:
    auto = "AutoModelForMaskedLM" if kind == "mlm" else "AutoModelForSequenceClassification"
    example = "The capital of France is [MASK]." if kind == "mlm" else "This is a great movie!"
    return f"""This directory is a whole transformers checkpoint (config.json, model.safetensors, the tokenizer):
`{auto}.from_pretrained("path/to/this/directory")`, or with this project
`minibert.from_pretrained("path/to/this/directory")`, or `python predict.py path/to/this/directory "{example}"`.
"""


def mlm_usage(m: dict) -> str:
    return f"""With PEFT (`transformers.AutoModelForMaskedLM`, `peft.PeftModel`):
`PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`.
With this project: `methods.load_adapter(minibert.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`
(for QLoRA and QDoRA, quantise the base first with `methods.qlora.quantize_linears`), or
`python predict.py path/to/this/directory "The capital of France is [MASK]."`.
"""


def classification_usage(m: dict, kind: str) -> str:
    n = len(m["label_names"]) if kind == "classification" else 1
    theirs = f"num_labels={n}" + (', problem_type="regression"' if kind == "regression" else "")
    pairs = m.get("text_pairs")
    example = "A man is sleeping. [SEP] A person rests." if pairs else "This is a great movie!"
    encoded = '"A man is sleeping.", "A person rests."' if pairs else '"This is a great movie!"'
    if m["method"] == "head":
        return f"""The head alone is in `head_model.safetensors`, under transformers' names. With transformers
(`AutoModelForSequenceClassification`, `safetensors.torch.load_file`):
```python
model = AutoModelForSequenceClassification.from_pretrained("{m["base_model"]}", {theirs})
for name, tensor in load_file("path/to/this/directory/head_model.safetensors").items():  # the head only
    model.get_parameter(name).data.copy_(tensor)  # raises for a name the model does not have
```
With this project:
```python
model = methods.load_adapter(minibert.from_pretrained("{m["base_model"]}", num_labels={n}), "path/to/this/directory")
```
or `python predict.py path/to/this/directory "{example}"`.
"""
    return f"""With transformers and PEFT (`AutoModelForSequenceClassification`, `AutoTokenizer`, `peft.PeftModel`):
```python
base_model = AutoModelForSequenceClassification.from_pretrained("{m["base_model"]}", {theirs})
model = PeftModel.from_pretrained(base_model, "path/to/this/directory")
tokenizer = AutoTokenizer.from_pretrained("{m["base_model"]}")
outputs = model(**tokenizer({encoded}, return_tensors="pt"))
```
With this project:
```python
model = methods.load_adapter(minibert.from_pretrained("{m["base_model"]}", num_labels={n}), "path/to/this/directory")
```
(for QLoRA and QDoRA, quantise the base first with `methods.qlora.quantize_linears`), or
`python predict.py path/to/this/directory "{example}"`.
"""
