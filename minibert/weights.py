"""Load Hugging Face BERT / DistilBERT safetensors checkpoints into `minibert.model.Bert` (masked LM)
or `minibert.classifier.BertClassifier` (sequence classification).

Every key in the checkpoint is accounted for by explicit tables, per architecture (and per task for heads):
  - ENCODER, HEADS: checkpoint name -> our parameter name, for the weights we use ("{i}": layer index);
  - TIED:    names of the MLM decoder, which is the word-embedding matrix transposed (and the head bias),
             so a copy in the file must be identical to what it is tied to;
  - SKIPPED, SKIPPED_BY_TASK: prefixes we ignore on purpose, each with the reason (e.g. the MLM head
             when loading a classifier, the classifier when loading a masked-LM model).
A key in none of them is an error, every shape is checked against the model built from config.json,
and every parameter of the model must be filled. Two spellings are accepted for the same weight:
the LayerNorm names of the original TensorFlow port (`LayerNorm.gamma` / `LayerNorm.beta`, still in the
hub's bert-base-uncased file) and today's (`LayerNorm.weight` / `LayerNorm.bias`); and a bare encoder
checkpoint (BertModel, DistilBertModel) stores its keys without the "bert." / "distilbert." prefix.
A head the checkpoint lacks (no MLM head in a BertModel; no classifier in bert-base-uncased) is
initialised as transformers initialises it, with a one-line warning saying so.
"""

import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open

from minibert.classifier import BertClassifier
from minibert.config import BertConfig
from minibert.errors import LoadError
from minibert.hub import model_files
from minibert.model import Bert

# The encoder: checkpoint name -> our name. Names containing "{i}" are repeated for every layer.
ENCODER = {
    "bert": {
        "bert.embeddings.word_embeddings.weight": "embeddings.word.weight",
        "bert.embeddings.position_embeddings.weight": "embeddings.position.weight",
        "bert.embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
        "bert.embeddings.LayerNorm.weight": "embeddings.norm.weight",
        "bert.embeddings.LayerNorm.bias": "embeddings.norm.bias",
        "bert.encoder.layer.{i}.attention.self.query.weight": "layers.{i}.attention.query.weight",
        "bert.encoder.layer.{i}.attention.self.query.bias": "layers.{i}.attention.query.bias",
        "bert.encoder.layer.{i}.attention.self.key.weight": "layers.{i}.attention.key.weight",
        "bert.encoder.layer.{i}.attention.self.key.bias": "layers.{i}.attention.key.bias",
        "bert.encoder.layer.{i}.attention.self.value.weight": "layers.{i}.attention.value.weight",
        "bert.encoder.layer.{i}.attention.self.value.bias": "layers.{i}.attention.value.bias",
        "bert.encoder.layer.{i}.attention.output.dense.weight": "layers.{i}.attention.output.weight",
        "bert.encoder.layer.{i}.attention.output.dense.bias": "layers.{i}.attention.output.bias",
        "bert.encoder.layer.{i}.attention.output.LayerNorm.weight": "layers.{i}.attention_norm.weight",
        "bert.encoder.layer.{i}.attention.output.LayerNorm.bias": "layers.{i}.attention_norm.bias",
        "bert.encoder.layer.{i}.intermediate.dense.weight": "layers.{i}.ffn_in.weight",
        "bert.encoder.layer.{i}.intermediate.dense.bias": "layers.{i}.ffn_in.bias",
        "bert.encoder.layer.{i}.output.dense.weight": "layers.{i}.ffn_out.weight",
        "bert.encoder.layer.{i}.output.dense.bias": "layers.{i}.ffn_out.bias",
        "bert.encoder.layer.{i}.output.LayerNorm.weight": "layers.{i}.ffn_norm.weight",
        "bert.encoder.layer.{i}.output.LayerNorm.bias": "layers.{i}.ffn_norm.bias",
    },
    "distilbert": {
        "distilbert.embeddings.word_embeddings.weight": "embeddings.word.weight",
        "distilbert.embeddings.position_embeddings.weight": "embeddings.position.weight",
        "distilbert.embeddings.LayerNorm.weight": "embeddings.norm.weight",
        "distilbert.embeddings.LayerNorm.bias": "embeddings.norm.bias",
        "distilbert.transformer.layer.{i}.attention.q_lin.weight": "layers.{i}.attention.query.weight",
        "distilbert.transformer.layer.{i}.attention.q_lin.bias": "layers.{i}.attention.query.bias",
        "distilbert.transformer.layer.{i}.attention.k_lin.weight": "layers.{i}.attention.key.weight",
        "distilbert.transformer.layer.{i}.attention.k_lin.bias": "layers.{i}.attention.key.bias",
        "distilbert.transformer.layer.{i}.attention.v_lin.weight": "layers.{i}.attention.value.weight",
        "distilbert.transformer.layer.{i}.attention.v_lin.bias": "layers.{i}.attention.value.bias",
        "distilbert.transformer.layer.{i}.attention.out_lin.weight": "layers.{i}.attention.output.weight",
        "distilbert.transformer.layer.{i}.attention.out_lin.bias": "layers.{i}.attention.output.bias",
        "distilbert.transformer.layer.{i}.sa_layer_norm.weight": "layers.{i}.attention_norm.weight",
        "distilbert.transformer.layer.{i}.sa_layer_norm.bias": "layers.{i}.attention_norm.bias",
        "distilbert.transformer.layer.{i}.ffn.lin1.weight": "layers.{i}.ffn_in.weight",
        "distilbert.transformer.layer.{i}.ffn.lin1.bias": "layers.{i}.ffn_in.bias",
        "distilbert.transformer.layer.{i}.ffn.lin2.weight": "layers.{i}.ffn_out.weight",
        "distilbert.transformer.layer.{i}.ffn.lin2.bias": "layers.{i}.ffn_out.bias",
        "distilbert.transformer.layer.{i}.output_layer_norm.weight": "layers.{i}.ffn_norm.weight",
        "distilbert.transformer.layer.{i}.output_layer_norm.bias": "layers.{i}.ffn_norm.bias",
    },
}

# The heads, per task (Bert.task, BertClassifier.task): checkpoint name -> our name.
HEADS = {
    "mlm": {
        "bert": {
            "cls.predictions.transform.dense.weight": "head.transform.weight",
            "cls.predictions.transform.dense.bias": "head.transform.bias",
            "cls.predictions.transform.LayerNorm.weight": "head.norm.weight",
            "cls.predictions.transform.LayerNorm.bias": "head.norm.bias",
            "cls.predictions.bias": "head.bias",
        },
        "distilbert": {
            "vocab_transform.weight": "head.transform.weight",
            "vocab_transform.bias": "head.transform.bias",
            "vocab_layer_norm.weight": "head.norm.weight",
            "vocab_layer_norm.bias": "head.norm.bias",
            "vocab_projector.bias": "head.bias",
        },
    },
    "classification": {
        "bert": {
            "bert.pooler.dense.weight": "head.dense.weight",  # the pre-trained pooler W_p
            "bert.pooler.dense.bias": "head.dense.bias",
            "classifier.weight": "head.classifier.weight",  # only in a BertForSequenceClassification file
            "classifier.bias": "head.classifier.bias",
        },
        "distilbert": {
            "pre_classifier.weight": "head.dense.weight",  # only in a DistilBertForSequenceClassification file
            "pre_classifier.bias": "head.dense.bias",
            "classifier.weight": "head.classifier.weight",
            "classifier.bias": "head.classifier.bias",
        },
    },
}

# Copies of tied tensors some files still carry: checkpoint name -> the parameter of ours it must equal.
TIED = {
    "mlm": {
        "bert": {
            "cls.predictions.decoder.weight": "embeddings.word.weight",  # decoder = E_word (transposed in use)
            "cls.predictions.decoder.bias": "head.bias",
        },
        "distilbert": {"vocab_projector.weight": "embeddings.word.weight"},
    },
    "classification": {"bert": {}, "distilbert": {}},
}

# Prefixes of keys we leave out on purpose, with the reason: buffers for every task, then each task's.
SKIPPED = {
    "bert": {
        "bert.embeddings.position_ids": "a constant buffer arange(max_len) that old files saved; we compute it",
        "bert.embeddings.token_type_ids": "a constant all-zero buffer that some files saved",
    },
    "distilbert": {
        "distilbert.embeddings.position_ids": "a constant buffer arange(max_len) that old files saved; we compute it",
    },
}
SKIPPED_BY_TASK = {
    "mlm": {
        "bert": {
            "bert.pooler.": "the [CLS] pooler feeds the next-sentence and classification heads, unused by masked-LM",
            "cls.seq_relationship.": "the next-sentence-prediction head of BertForPreTraining, unused by masked-LM",
            "classifier.": "the head of BertForSequenceClassification, unused by masked-LM",
        },
        "distilbert": {
            "pre_classifier.": "the head of DistilBertForSequenceClassification, unused by masked-LM",
            "classifier.": "the head of DistilBertForSequenceClassification, unused by masked-LM",
        },
    },
    "classification": {
        "bert": {"cls.": "the pre-training heads (masked LM, next sentence), unused by classification"},
        "distilbert": {"vocab_": "the masked-LM head, unused by classification"},
    },
}

BASE_PREFIX = {"bert": "bert.", "distilbert": "distilbert."}  # dropped by bare-encoder checkpoints
NEW_LAYER_SEED = 0  # the seed of head layers a checkpoint lacks (see _initialise_missing_head)
HEAD = "head."  # our head's parameter names start with this
HEAD_KEYS = ("cls.", "vocab_", "pre_classifier.", "classifier.")  # checkpoint keys outside the base model


def from_pretrained(
    name_or_path: str, dtype: torch.dtype | None = None, device=None, num_labels: int | None = None
) -> Bert | BertClassifier:
    """Build the model from config.json and fill it from safetensors. Returns it in eval mode.

    name_or_path: a directory laid out like a hub snapshot, or a hub repo id (downloaded into the HF cache).
    dtype: parameter dtype; None keeps float32. device: where the parameters live; None is the CPU.
    num_labels: K >= 2 a sequence classifier with K classes, 1 a regression head with one score
    (`BertClassifier`), whose head comes from the checkpoint if it is a classifier, else is new; None gives
    what the checkpoint is: a sequence classifier (its config.json's id2label) or the masked-LM model (`Bert`).
    """
    files = model_files(name_or_path)
    config = BertConfig.from_json_file(files.config)
    config.name_or_path = str(name_or_path)
    if num_labels is None and config.num_labels:  # a saved classifier (or regression) loads as one
        num_labels = config.num_labels
    if num_labels is not None:
        if num_labels < 1:
            raise LoadError(f"num_labels must be at least 1 (1: regression), got {num_labels}")
        config.num_labels = num_labels
    with torch.device("meta"):  # build the modules without allocating or initialising memory
        model = BertClassifier(config) if num_labels is not None else Bert(config)
    model = model.to(dtype=dtype or torch.float32).to_empty(device=device or "cpu")  # uninitialised storage
    load_weights(model, files.weights)
    return model.eval()


def expand_names(config: BertConfig, task: str) -> dict[str, str]:
    """The encoder's and the task head's names with "{i}" expanded for every layer: checkpoint name -> ours."""
    table = {}
    for theirs, ours in {**ENCODER[config.arch], **HEADS[task][config.arch]}.items():
        layers = range(config.num_layers) if "{i}" in theirs else [None]
        for i in layers:
            table[theirs.format(i=i)] = ours.format(i=i)
    return table


def module_names(model: nn.Module) -> dict[str, str]:
    """Our module name -> the Hugging Face module name it was loaded from, derived from the name tables.

    e.g. "layers.0.attention.query" -> "bert.encoder.layer.0.attention.self.query", and for a classifier
    "head.classifier" -> "classifier". methods/ uses it to let users name target modules as PEFT does,
    and to write adapter files that PEFT can read.
    """
    suffix = ".weight"
    return {
        ours[: -len(suffix)]: theirs[: -len(suffix)]
        for theirs, ours in expand_names(model.config, model.task).items()
        if theirs.endswith(suffix)
    }


def load_weights(model: Bert | BertClassifier, files: list[Path]) -> None:
    """Copy every tensor of the safetensors `files` into `model`, checking names and shapes (see module doc)."""
    arch, task = model.config.arch, model.task
    names = expand_names(model.config, task)
    tied_names = TIED[task][arch]
    skipped = {**SKIPPED[arch], **SKIPPED_BY_TASK[task][arch]}
    params = dict(model.named_parameters())
    # Per our parameter: the file that filled it. Tied copies are checked once everything is loaded.
    filled, tied, unexpected = {}, [], []
    with torch.no_grad():
        for path in files:
            for key, tensor in _read(path, BASE_PREFIX[arch]):
                if key in names:
                    ours = names[key]
                    if ours.startswith("head.classifier") and tensor.shape[0] != model.config.num_labels:
                        raise LoadError(
                            f"{path}: the checkpoint's classifier has {tensor.shape[0]} classes but num_labels is "
                            f"{model.config.num_labels}; pass num_labels={tensor.shape[0]}, or start from a "
                            "checkpoint without a classifier"
                        )
                    _check_shape(path, key, tensor, params[ours])
                    if ours in filled:
                        raise LoadError(f"{path}: {key} appears twice (in legacy and current spelling?)")
                    params[ours].copy_(tensor)  # casts to the model's dtype and moves to its device
                    filled[ours] = path
                elif key in tied_names:
                    tied.append((path, key, tensor))
                elif not any(key.startswith(prefix) for prefix in skipped):
                    unexpected.append(key)
        if unexpected:
            raise LoadError(
                f"{files[0]}: {len(unexpected)} key(s) that a {arch} checkpoint does not have, "
                f"e.g. {unexpected[:5]}. Is this really a {arch} checkpoint matching its config.json?"
            )
        _initialise_missing_head(model, [name for name in params if name not in filled], files[0])
        for path, key, tensor in tied:
            ours = params[tied_names[key]]
            _check_shape(path, key, tensor, ours)
            if not torch.equal(tensor.to(device=ours.device, dtype=ours.dtype), ours):
                raise LoadError(
                    f"{path}: {key} differs from the tensor it is tied to ({tied_names[key]}); "
                    "minibert ties the MLM decoder to the word embeddings, as BERT and DistilBERT do"
                )


def _initialise_missing_head(model: Bert | BertClassifier, missing: list[str], path: Path) -> None:
    """Initialise, as transformers does, a head the checkpoint lacks (with a one-line warning): the whole
    MLM head of a bare encoder, or a layer of the classification head (bert-base-uncased has the pooler
    but no classifier). Anything else missing, or a layer only partly present, is an error.

    The draw is seeded with a constant, so every load of a checkpoint builds the same new layers: one that
    is never trained and so is in no adapter file (BERT's pooler, frozen, when a checkpoint lacks it) is the
    same when a run trains, when evaluate.py and predict.py rebuild it, and when merge.py folds it."""
    if not missing:
        return
    if not all(name.startswith(HEAD) for name in missing):
        raise LoadError(f"{path}: {len(missing)} parameter(s) missing from the checkpoint, e.g. {missing[:5]}")
    if model.task == "mlm":
        units = {"head": model.head}  # its parts only make sense together
    else:
        units = {f"head.{n}": m for n, m in model.head.named_children() if list(m.parameters())}
    new = []
    cuda = [p.device.index or 0 for p in model.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=cuda):  # the caller's random state is left as it was
        torch.manual_seed(NEW_LAYER_SEED)
        for prefix, module in units.items():
            names = [f"{prefix}.{n}" for n, _ in module.named_parameters()]
            absent = [n for n in names if n in missing]
            if absent and len(absent) < len(names):
                raise LoadError(f"{path}: {prefix} is only partly in the checkpoint: {absent} missing")
            if absent:
                module.apply(model._init_weights)
                new.append(prefix)
    if model.task == "mlm":
        what = "masked-LM head (an encoder-only checkpoint), so MLM predictions are random until it is trained"
    else:
        what = " or ".join(module_names(model)[n] for n in new)
    std = model.config.initializer_range
    warnings.warn(f"{path} has no {what}; initialised with N(0, {std}) weights and zero biases", stacklevel=4)


def _read(path: Path, base_prefix: str):
    """Yield (normalised name, tensor) for every tensor of one safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            bare = not any(key.startswith(base_prefix) for key in keys)  # a BertModel / DistilBertModel file
            for key in keys:
                yield _normalise(key, base_prefix if bare else ""), f.get_tensor(key)
    except LoadError:
        raise
    except Exception as e:  # safetensors raises its own error type for a truncated or corrupt file
        raise LoadError(f"{path}: not a readable safetensors file ({e}); re-download or re-export it") from None


def _normalise(key: str, add_prefix: str) -> str:
    """Current spelling of a checkpoint key: legacy LayerNorm gamma/beta -> weight/bias, base prefix restored."""
    if key.endswith("LayerNorm.gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith("LayerNorm.beta"):
        key = key[: -len("beta")] + "bias"
    if add_prefix and not key.startswith(HEAD_KEYS):
        key = add_prefix + key
    return key


def _check_shape(path: Path, key: str, tensor: torch.Tensor, param: torch.Tensor) -> None:
    if tensor.shape != param.shape:
        raise LoadError(
            f"{path}: {key} has shape {tuple(tensor.shape)} but config.json implies {tuple(param.shape)}; "
            "the config and the weights do not belong together"
        )
