"""Save a minibert model as a Hugging Face checkpoint: config.json and model.safetensors under transformers'
names, so that `AutoModelForSequenceClassification.from_pretrained(dir)` (or `AutoModelForMaskedLM`) loads
it with no missing and no unexpected key, and `minibert.from_pretrained(dir)` loads it back.

The names come from the same tables that loading reads (minibert/weights.py), read the other way: every
parameter of ours is written under the one checkpoint name that fills it. The MLM decoder is the word
embedding (tied), so it is not written twice: transformers ties it again on load, as its own
save_pretrained does. The config is the base model's config.json with what the new head changes:
`architectures`, and for a classifier `id2label` / `label2id` (the class names) and `problem_type`
("single_label_classification", or "regression" for one output). `save_model_directory` adds the base
model's tokenizer files: a directory that `from_pretrained` loads whole (merge.py, and a full fine-tuning run).
"""

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from minibert.classifier import BertClassifier
from minibert.files import write_file
from minibert.hub import fetch, model_files, read_json_object
from minibert.model import Bert
from minibert.weights import expand_names

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")

ARCHITECTURES = {  # (arch, task) -> transformers' class
    ("bert", "mlm"): "BertForMaskedLM",
    ("distilbert", "mlm"): "DistilBertForMaskedLM",
    ("bert", "classification"): "BertForSequenceClassification",
    ("distilbert", "classification"): "DistilBertForSequenceClassification",
}


def hf_config(model: Bert | BertClassifier, base_config: dict, label_names: list[str] | None) -> dict:
    """The base model's config.json, made to describe this model's head (see the module doc)."""
    config = {**base_config, "architectures": [ARCHITECTURES[(model.config.arch, model.task)]]}
    if model.task == "classification":
        regression = model.config.num_labels == 1
        names = ["LABEL_0"] if regression else list(label_names)
        config["id2label"] = {str(i): name for i, name in enumerate(names)}  # transformers' JSON: string keys
        config["label2id"] = {name: i for i, name in enumerate(names)}
        config["problem_type"] = "regression" if regression else "single_label_classification"
    return config


def hf_state_dict(model: Bert | BertClassifier) -> dict:
    """Every parameter under its transformers name (the tied MLM decoder once, as the word embedding)."""
    ours_to_theirs = {ours: theirs for theirs, ours in expand_names(model.config, model.task).items()}
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(ours_to_theirs))
    if missing:  # an adapter still in place, or a module the tables do not know
        raise ValueError(f"no checkpoint name for {missing[:3]}; merge and unload the adapters first")
    return {ours_to_theirs[name]: p.detach().to("cpu").contiguous() for name, p in params.items()}


def save_pretrained(model: Bert | BertClassifier, directory, base_config: dict, label_names=None) -> None:
    """config.json and model.safetensors into `directory` (an existing one; write it atomically around this)."""
    directory = Path(directory)
    config = hf_config(model, base_config, label_names)
    tensors = hf_state_dict(model)
    write_file(directory / "config.json", lambda path: Path(path).write_text(json.dumps(config, indent=2) + "\n"))
    write_file(directory / "model.safetensors", lambda path: save_file(tensors, path, metadata={"format": "pt"}))


def save_model_directory(model: Bert | BertClassifier, directory, base_model: str, label_names=None) -> None:
    """config.json, model.safetensors and `base_model`'s tokenizer files into `directory` (an existing one),
    each file written atomically."""
    save_pretrained(model, directory, read_json_object(model_files(base_model).config), label_names)
    for name in TOKENIZER_FILES:
        if (path := fetch(base_model, name)) is not None:
            write_file(Path(directory) / name, lambda target, source=path: shutil.copyfile(source, target))
