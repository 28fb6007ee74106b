"""Sequence classification: the encoder's [CLS] vector through a small head to one logit per class.

Devlin et al. (2019), Section 4.1 (GLUE): "the final hidden vector C of the first input token ([CLS])"
is the aggregate representation of the sequence; a classification layer W (K x H) gives the logits,
and the loss is log(softmax(C W^T)). The checkpoints people fine-tune put a little more in between,
and this head is written out to equal them:

    BERT        logits = W_c Dropout(tanh(W_p h_[CLS] + b_p)) + b_c         (BertPooler, then `classifier`)
    DistilBERT  logits = W_c Dropout(ReLU(W_pre h_[CLS] + b_pre)) + b_c     (`pre_classifier`, then `classifier`)

Both are "dense layer, activation, dropout, output layer" on h_[CLS]; only the activation differs. BERT's
pooler W_p was pre-trained (on next-sentence prediction) and ships in bert-base-uncased, so it is loaded
and stays frozen under PEFT; DistilBERT has no pooler, so its `pre_classifier` is new and is trained with
the output layer. `trained_head` names those layers: the ones a parameter-efficient fine-tune trains in
full (PEFT's `modules_to_save`).

Only h_[CLS] is used, so the last block computes its output at position 0 alone (`keep`, as the
masked-LM model does at the masked positions): exact, and 1/T of that block's feed-forward work.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.config import BertConfig
from minibert.dropout import Dropout
from minibert.model import Encoder

# Per architecture, our names of the head layers that fine-tuning trains in full (see the module doc).
TRAINED_HEAD = {"bert": ["head.classifier"], "distilbert": ["head.dense", "head.classifier"]}


class ClassificationHead(nn.Module):
    """logits = W_c Dropout(act(W_d h_[CLS] + b_d)) + b_c; act is tanh (BERT's pooler) or ReLU (DistilBERT)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # W_p (BERT) or W_pre (DistilBERT): H -> H
        self.act = torch.tanh if config.arch == "bert" else F.relu
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)  # W_c: H -> K

    def forward(self, cls_vector):
        cls_vector = cls_vector.to(self.classifier.weight.dtype)  # a bf16 encoder under a head kept in fp32 (QLoRA)
        pooled = self.act(self.dense(cls_vector))  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, H) @ (H, K) -> (B, K)


class BertClassifier(Encoder):
    """The encoder plus a classification head over [CLS]: config.num_labels >= 2 classes, or 1 output (regression)."""

    task = "classification"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError(f"a classifier needs num_labels >= 1 (1: regression), got {config.num_labels}")
        self.head = ClassificationHead(config)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Class logits (num_labels = 1: the score): input_ids (B, T) -> (B, num_labels).

        attention_mask: (B, T), 1 = token, 0 = padding. token_type_ids: (B, T) segment ids of a pair, or None."""
        first = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, T)
        first[:, 0] = True  # [CLS] is the first token of every sequence
        cls_vector = self.encode(input_ids, attention_mask, token_type_ids, keep=first)  # (B, H): h_[CLS] only
        return self.head(cls_vector)  # (B, K)


def trained_head(model: nn.Module) -> list[str]:
    """Our names of the head layers trained in full by fine-tuning; [] for a model without a task head."""
    if getattr(model, "task", None) != "classification":
        return []
    return TRAINED_HEAD[model.config.arch]
