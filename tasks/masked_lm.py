"""Masked language modelling: BERT's own pre-training objective, continued on new text (WikiText-2, or yours).

Devlin et al. (2019), Section 3.1, Task #1. The data are fixed-length blocks of running text
(data/blocks.py); each training step corrupts 15% of a batch's tokens (data/masking.py) and the loss is
the mean cross-entropy of predicting the originals at those positions:

    loss = -(1/N) sum over the N masked positions t of log p(w_t | corrupted block)
    perplexity = exp(loss)

Validation and test use one fixed set of masks (the same for every run and method), so their numbers
are comparable; the best checkpoint is the one with the lowest validation loss. Your text without a
--validation-file gives a fixed, seeded slice of its training blocks as validation (data/labelled.py's
policy: 10%, at most 2,000).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

import data
import minibert
from data.labelled import SPLIT_SEED, validation_size
from training.device import autocast


class MaskedLM:
    kind = "mlm"  # what metrics.json calls this kind of task (task_kind)
    selection = "loss"  # the validation metric that picks the best checkpoint ...
    higher_is_better = False  # ... and which way is better
    default_max_seq_len = 128  # tokens per block
    metrics = ("perplexity", "accuracy", "top5_accuracy")  # reported on the test split(s)
    label_names = None  # no classes: a vocabulary

    def __init__(self, corpus=None):
        """corpus: data.wikitext.WikiText() (default), or data.user_files.TextFiles (your text)."""
        self.corpus = corpus or data.wikitext.WikiText()
        self.name, self.title = self.corpus.name, self.corpus.title
        self.test_splits = tuple(self.corpus.test_files)  # ("test",), or () for your text without a test file

    def load_model(self, name_or_path: str, dtype, device):
        return minibert.from_pretrained(name_or_path, dtype=dtype, device=device)

    def load_data(self, tokenizer, data_dir, cache_dir, max_seq_len: int, splits=None) -> None:
        """Read, tokenise and pack the splits into (n, max_seq_len) blocks; fix the evaluation masks."""
        splits = splits or ("train", "validation", *self.test_splits)
        self.vocab = data.MaskingVocab.from_tokenizer(tokenizer)
        self.blocks, self.fixed_masks = {}, {}
        for split, content in self.corpus.load(data_dir, splits).items():
            try:
                array = data.build_blocks(content["lines"], tokenizer, max_seq_len, cache_dir)
            except ValueError as e:
                raise data.DataError(f"{content['source']}: {e}") from None
            self.blocks[split] = torch.from_numpy(array.astype("int64"))  # (n, T)
        if self.corpus.held_out and "train" in self.blocks:  # validation: a fixed slice of the training blocks
            order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(self.blocks["train"])))
            size = validation_size(len(order))
            if len(order) <= size:
                raise data.DataError(
                    f"{self.corpus.source()}: {len(order)} block(s) of {max_seq_len} tokens, too "
                    "few to hold one out for validation; give more text or a --validation-file"
                )
            train = self.blocks["train"]
            self.blocks["validation"] = train[order[:size].sort().values]  # (size, T)
            self.blocks["train"] = train[order[size:].sort().values]  # (n - size, T)
        self.blocks = {split: blocks for split, blocks in self.blocks.items() if split in splits}
        for split in self.blocks:
            if split != "train":
                self.fixed_masks[split] = data.eval_masks(self.blocks[split], self.vocab)

    def notices(self) -> list[str]:
        return []  # empty lines are simply not text

    def data_report(self, global_batch: int) -> dict:
        report = {"dataset": self.corpus.source()}
        return report | {f"{split}_blocks": len(blocks) for split, blocks in self.blocks.items()}

    def batches_per_epoch(self, global_batch: int) -> int:
        return len(self.blocks["train"]) // global_batch

    def train_batch(self, seed: int, epoch: int, index: int, global_batch: int) -> dict[str, torch.Tensor]:
        """Batch `index` of `epoch`: blocks in a seeded order, masked with a seeded draw (resumable)."""
        order = torch.randperm(len(self.blocks["train"]), generator=data.seeded_generator(seed, epoch))
        ids = self.blocks["train"][order[index * global_batch : (index + 1) * global_batch]]  # (G, T)
        return data.mask_tokens(ids, self.vocab, data.seeded_generator(seed, epoch, index))

    def count(self, batch) -> torch.Tensor:
        """What the loss is a mean over: the masked tokens."""
        return (batch["labels"] != data.IGNORE).sum()

    def tokens(self, batch) -> int:
        return batch["input_ids"].numel()

    def loss(self, model, batch) -> torch.Tensor:
        return model.mlm_loss(batch["input_ids"], batch["labels"])  # the head runs at the masked positions only

    def logits(self, model, batch) -> torch.Tensor:
        return model.masked_logits(batch["input_ids"], batch["labels"])  # (N, V)

    def sample_batch(self, split: str, n: int) -> dict[str, torch.Tensor]:
        return {key: value[:n] for key, value in self.fixed_masks[split].items()}

    @torch.no_grad()
    def evaluate(self, model, split: str, batch_size: int, device, precision: str) -> dict:
        """Token-weighted loss, perplexity = exp(loss), top-1 and top-5 accuracy on the split's fixed masks."""
        masked = self.fixed_masks[split]
        was_training = model.training
        model.eval()
        loss_sum, correct, correct5, count = 0.0, 0, 0, 0
        for i in range(0, len(masked["input_ids"]), batch_size):
            batch = {key: value[i : i + batch_size].to(device) for key, value in masked.items()}
            with autocast(device, precision):
                logits = self.logits(model, batch).float()  # (N, V) at the masked positions only
            targets = batch["labels"][batch["labels"] != data.IGNORE]  # (N,)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            top = logits.topk(5, dim=-1).indices  # (N, 5)
            correct += (top[:, 0] == targets).sum().item()
            correct5 += (top == targets[:, None]).any(dim=-1).sum().item()
            count += len(targets)
        model.train(was_training)
        loss = loss_sum / count
        return {
            "loss": loss,
            "perplexity": math.exp(loss),
            "accuracy": correct / count,
            "top5_accuracy": correct5 / count,
            "masked_tokens": count,
        }

    def describe(self, result: dict) -> str:
        return f"loss {result['loss']:.4f}, perplexity {result['perplexity']:.2f}, accuracy {result['accuracy']:.4f}"
