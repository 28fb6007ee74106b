"""The encoder's hyper-parameters, and how they are read from a Hugging Face `config.json`.

BERT (Devlin et al., 2019, Table/Section 3: L layers, hidden size H, A heads, FFN size 4H) and
DistilBERT (Sanh et al., 2019, Section 2: the same block, half the layers, no token types) are one
architecture with different sizes and parameter names. So one dataclass describes both; the
differences that matter to the maths are `type_vocab_size` (0 = no token-type embedding) and the
numbers. The *names* of the parameters differ too; those live in `minibert/weights.py`.
"""

from dataclasses import dataclass
from pathlib import Path

from minibert.errors import LoadError
from minibert.hub import read_json_object

# Activation names used by Hugging Face configs that this encoder implements (see model.py).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass
class BertConfig:
    arch: str = "bert"  # "bert" or "distilbert": selects the parameter-name table used for loading
    vocab_size: int = 30522  # V: rows of the word-embedding matrix (and columns of the MLM logits)
    hidden_size: int = 768  # H (d_model): width of every token vector between blocks
    num_layers: int = 12  # L: number of transformer blocks
    num_heads: int = 12  # A: attention heads per block; head size is H / A
    intermediate_size: int = 3072  # width of the feed-forward layer inside each block (4H)
    hidden_act: str = "gelu"  # FFN and MLM-head activation; "gelu" is the exact erf GELU
    max_position_embeddings: int = 512  # longest sequence: rows of the learned position table
    type_vocab_size: int = 2  # segment (token-type) embeddings; 0 for DistilBERT, which has none
    layer_norm_eps: float = 1e-12  # epsilon inside every LayerNorm
    hidden_dropout: float = 0.1  # dropout on embeddings and on each sub-layer output (training only)
    attention_dropout: float = 0.1  # dropout on the attention probabilities (training only)
    pad_token_id: int = 0  # id of [PAD]; its embedding row is initialised to zero
    initializer_range: float = 0.02  # std of the normal init, used only for a head missing from a checkpoint
    classifier_dropout: float = 0.1  # dropout before the classification layer (BERT: hidden dropout; DistilBERT: 0.2)
    num_labels: int = 0  # classes of the sequence classifier (1: a regression's one score); 0 for masked LM
    attention: str = "sdpa"  # "sdpa" (fused kernel) or "explicit" (softmax(QK^T/sqrt(d))V written out)
    name_or_path: str = ""  # where the weights came from (hub repo id or directory); recorded in adapter files

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self):
        if self.arch not in ("bert", "distilbert"):
            raise ValueError(f"arch must be 'bert' or 'distilbert', got {self.arch!r}")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}")
        if self.num_labels < 0:
            raise ValueError(
                f"num_labels must be 0 (masked LM), 1 (regression) or K >= 2 classes, got {self.num_labels}"
            )
        if self.attention not in ("sdpa", "explicit"):
            raise ValueError(f"attention must be 'sdpa' or 'explicit', got {self.attention!r}")

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "BertConfig":
        """Translate a Hugging Face BERT or DistilBERT config dict into a BertConfig.

        Anything this encoder does not implement (a decoder, relative positions, an untied decoder)
        is refused with a LoadError naming `source`, rather than silently computing something else.
        """
        model_type = d.get("model_type") or _model_type_from_architectures(d.get("architectures") or [])
        try:
            if model_type == "bert":
                unsupported = {
                    "is_decoder": d.get("is_decoder", False),
                    "add_cross_attention": d.get("add_cross_attention", False),
                    "position_embedding_type != 'absolute'": d.get("position_embedding_type", "absolute") != "absolute",
                    "tie_word_embeddings = false": not d.get("tie_word_embeddings", True),
                }
                config = cls(
                    arch="bert",
                    vocab_size=d["vocab_size"],
                    hidden_size=d["hidden_size"],
                    num_layers=d["num_hidden_layers"],
                    num_heads=d["num_attention_heads"],
                    intermediate_size=d["intermediate_size"],
                    hidden_act=d.get("hidden_act", "gelu"),
                    max_position_embeddings=d.get("max_position_embeddings", 512),
                    type_vocab_size=d.get("type_vocab_size", 2),
                    layer_norm_eps=d.get("layer_norm_eps", 1e-12),
                    hidden_dropout=d.get("hidden_dropout_prob", 0.1),
                    attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
                    pad_token_id=d.get("pad_token_id") or 0,
                    initializer_range=d.get("initializer_range", 0.02),
                    # BertForSequenceClassification: classifier_dropout, falling back to hidden_dropout_prob
                    classifier_dropout=_first_set(d.get("classifier_dropout"), d.get("hidden_dropout_prob"), 0.1),
                )
            elif model_type == "distilbert":
                unsupported = {"tie_word_embeddings = false": not d.get("tie_word_embeddings", True)}
                config = cls(
                    arch="distilbert",
                    vocab_size=d["vocab_size"],
                    hidden_size=d["dim"],
                    num_layers=d["n_layers"],
                    num_heads=d["n_heads"],
                    intermediate_size=d["hidden_dim"],
                    hidden_act=d.get("activation", "gelu"),
                    max_position_embeddings=d.get("max_position_embeddings", 512),
                    type_vocab_size=0,  # DistilBERT dropped the segment embeddings
                    layer_norm_eps=1e-12,  # hard-coded in DistilBERT, not stored in its config
                    hidden_dropout=d.get("dropout", 0.1),
                    attention_dropout=d.get("attention_dropout", 0.1),
                    pad_token_id=d.get("pad_token_id") or 0,
                    initializer_range=d.get("initializer_range", 0.02),
                    classifier_dropout=d.get("seq_classif_dropout", 0.2),  # DistilBertForSequenceClassification
                )
            else:
                raise LoadError(
                    f"{source}: model_type {model_type!r} (architectures {d.get('architectures')}) is not supported; "
                    "minibert loads BERT checkpoints (model_type 'bert', e.g. bert-base-uncased) and "
                    "DistilBERT checkpoints (model_type 'distilbert', e.g. distilbert-base-uncased)"
                )
        except KeyError as e:
            raise LoadError(
                f"{source}: required field {e.args[0]!r} is missing for model_type {model_type!r}"
            ) from None
        except ValueError as e:
            raise LoadError(f"{source}: {e}") from None
        refused = [name for name, present in unsupported.items() if present]
        if refused:
            raise LoadError(f"{source}: this checkpoint uses {', '.join(refused)}, which minibert does not implement")
        if any(name.endswith("ForSequenceClassification") for name in d.get("architectures") or []):
            config.num_labels = len(d.get("id2label") or {}) or d.get("num_labels", 2)  # a classifier's classes
        return config

    @classmethod
    def from_json_file(cls, path: Path) -> "BertConfig":
        return cls.from_hf_dict(read_json_object(path), source=str(path))


def _first_set(*values):
    return next(v for v in values if v is not None)


def _model_type_from_architectures(architectures: list) -> str | None:
    """Old configs may lack model_type; their class name (e.g. 'BertForMaskedLM') still tells."""
    for name in architectures:
        if name.startswith("DistilBert"):
            return "distilbert"
        if name.startswith("Bert"):
            return "bert"
    return None
