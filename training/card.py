"""The model card (README.md) written into every finished run: the reference card's fields, each filled
with the value measured by that run (never "N/A"), and how to use the adapter with PEFT and with ours."""

METHOD_LINES = {
    "lora": "LoRA (Hu et al., ICLR 2022): h = W0 x + (alpha/r) B A x",
    "sparse_lora": "Sparse LoRA / SoRA (Ding et al., EMNLP 2023): gated LoRA whose gates are pruned to "
    "exact zeros by a proximal L1 step; saved as the pruned plain LoRA",
    "hira": "HiRA (Huang et al., ICLR 2025): h = W0 x + (W0 ⊙ B A) x",
    "qlora": "QLoRA (Dettmers et al., NeurIPS 2023): LoRA on an NF4 4-bit base",
    "head": "Classification head only (the linear-probe baseline): the encoder is frozen, no adapter",
}


def model_card(m: dict) -> str:
    h = m["hyperparameters"]
    classification = m["task"] != "wikitext2"
    extra = ""
    if m["method"] == "sparse_lora":
        ranks = [g["rank"] for g in m["sparse_lora_gates"]]
        zero = 1 - sum(ranks) / sum(g["r"] for g in m["sparse_lora_gates"])
        extra = f"- **Sparsity:** {100 * zero:.1f}% of gates exactly zero (λ = {h['sparse_lambda']}); ranks {ranks}\n"
    if m["method"] == "qlora":
        extra = f"- **Quantisation:** NF4, block size {h['blocksize']}, double quant. {not h['no_double_quant']}\n"
    if classification:
        extra += f"- **Trained in full:** {', '.join(f'`{n}`' for n in m['modules_to_save'])} (the task head)\n"
    memory = (
        "peak GPU memory allocated" if m["peak_memory_kind"] == "cuda_max_allocated" else "peak RSS of the CPU process"
    )
    targets = ", ".join(f"`{t}`" for t in m["target_modules"]) if isinstance(m["target_modules"], list) else "regex"
    unit = "examples" if classification else f"blocks of {h['max_seq_len']} tokens"
    steps = f"{m['steps']} steps of {h['batch_size']} × {m['world_size']} {unit}"
    schedule = f"{h['warmup_steps']} warm-up steps, then linear decay"
    adapter = "" if m["method"] == "head" else f"- **Rank (r):** {h['r']}\n- **Alpha:** {h['alpha']}\n" \
        f"- **Target modules:** {targets}\n- **Dropout:** {h['dropout']}\n"  # fmt: skip
    if classification:
        tags, dataset, metric_names = f"{m['method']}, text-classification, {m['task']}", m["dataset"], "accuracy, f1"
        title = f"{m['task'].upper()} (sentiment classification)"
    else:
        tags, dataset, metric_names = f"{m['method']}, masked-lm, wikitext-2", "wikitext", "perplexity, accuracy"
        title = "WikiText-2 (masked LM)"
    return f"""---
base_model: {m["base_model"]}
library_name: peft
tags: [{tags}]
datasets: [{dataset}]
metrics: [{metric_names}]
---

# {m["method"]} — {m["base_model"]} fine-tuned on {title}

{METHOD_LINES[m["method"]]}. Trained with minibert-peft (a from-scratch PyTorch implementation).

## Training configuration
- **Base model:** {m["base_model"]} ({m["architecture"]})
{adapter}{extra}- **Epochs:** {m["epochs"]:.2f} ({steps})
- **Learning rate:** {h["lr"]}, AdamW, weight decay {h["weight_decay"]}, {schedule}
- **Seed:** {h["seed"]}

## Results (measured)
| | |
| --- | --- |
| Total parameters | {m["total_params"]:,} |
| Trainable parameters | {m["trainable_params"]:,} ({m["trainable_percent"]:.3f}%) |
| Saved adapter | {m["exported_params"]:,} parameters, {m["exported_file_bytes"] / 1e3:,.1f} kB |
| Model size in memory | {m["model_size_mb"]:.1f} MB |
{classification_rows(m) if classification else mlm_rows(m)}| Training time | {m["train_time_s"]:.1f} s |
| Training throughput | {m["train_samples_per_s"]:.1f} samples/s, {m["train_tokens_per_s"]:,.0f} tokens/s |
| Memory | {m["peak_memory_mb"]:.0f} MB ({memory}) |
| Device | {m["device"]} × {m["world_size"]} |

{classification_notes(m) if classification else mlm_notes()}
## Usage
{classification_usage(m) if classification else mlm_usage(m)}"""


def mlm_rows(m: dict) -> str:
    return f"""| Test perplexity (masked tokens) | {m["test_perplexity"]:.3f} |
| Test masked-token accuracy | {m["test_accuracy"]:.4f} |
| Validation perplexity (best, step {m["best_step"]}) | {m["validation_perplexity"]:.3f} |
"""


def mlm_notes() -> str:
    return """Perplexity is exp of the mean cross-entropy over the masked tokens of the test split, with the same
fixed masks for every method (15% of the tokens; 80% [MASK], 10% random, 10% unchanged).
"""


def mlm_usage(m: dict) -> str:
    return f"""With PEFT (`transformers.AutoModelForMaskedLM`, `peft.PeftModel`):
`PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`.
With this project: `methods.load_adapter(minibert.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`
(for QLoRA, quantise the base first with `methods.qlora.quantize_linears`), or
`python predict.py path/to/this/directory "The capital of France is [MASK]."`.
"""


def classification_rows(m: dict) -> str:
    return f"""| Test accuracy | {m["test_accuracy"]:.4f} |
| Test F1 (positive class) | {m["test_f1"]:.4f} |
| Test macro F1 | {m["test_macro_f1"]:.4f} |
| Test loss | {m["test_loss"]:.4f} |
| Validation accuracy (best, step {m["best_step"]}) | {m["validation_accuracy"]:.4f} |
"""


def classification_notes(m: dict) -> str:
    return f"""Test split: {m["test_split"]} ({m["test_examples"]:,} examples); validation: a fixed slice of
{m["validation_examples"]:,} training examples held out of training. Labels: {", ".join(m["label_names"])}.
"""


def classification_usage(m: dict) -> str:
    n = len(m["label_names"])
    if m["method"] == "head":
        return f"""The head alone is in `head_model.safetensors`, under transformers' names. With transformers
(`AutoModelForSequenceClassification`, `safetensors.torch.load_file`):
```python
model = AutoModelForSequenceClassification.from_pretrained("{m["base_model"]}", num_labels={n})
for name, tensor in load_file("path/to/this/directory/head_model.safetensors").items():  # the head only
    model.get_parameter(name).data.copy_(tensor)  # raises for a name the model does not have
```
With this project:
```python
model = methods.load_adapter(minibert.from_pretrained("{m["base_model"]}", num_labels={n}), "path/to/this/directory")
```
or `python predict.py path/to/this/directory "This is a great movie!"`.
"""
    return f"""With transformers and PEFT (`AutoModelForSequenceClassification`, `AutoTokenizer`, `peft.PeftModel`):
```python
base_model = AutoModelForSequenceClassification.from_pretrained("{m["base_model"]}", num_labels={n})
model = PeftModel.from_pretrained(base_model, "path/to/this/directory")
tokenizer = AutoTokenizer.from_pretrained("{m["base_model"]}")
outputs = model(**tokenizer("This is a great movie!", return_tensors="pt"))
```
With this project:
```python
model = methods.load_adapter(minibert.from_pretrained("{m["base_model"]}", num_labels={n}), "path/to/this/directory")
```
(for QLoRA, quantise the base first with `methods.qlora.quantize_linears`), or
`python predict.py path/to/this/directory "This is a great movie!"`.
"""
