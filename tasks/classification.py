"""Sequence classification: one label per text (or pair of texts), from the [CLS] vector; and regression.

Devlin et al. (2019), Section 4.1: the logits are a classification head over h_[CLS]
(minibert/classifier.py) and the loss is the mean cross-entropy over the batch's examples:

    loss = -(1/B) sum over examples i of log softmax(logits_i)[y_i]

A pair is one sequence, [CLS] a [SEP] b [SEP], with segment ids 0 then 1 (BERT; DistilBERT has no
segments), as BERT reads sentence pairs (Section 4.1, GLUE). Regression (STS-B, --task regression) is the same
network with one output, trained with the mean squared error (tasks/regression.py).

The data are variable-length examples (data/examples.py) in batches of similar length (data/buckets.py),
padded to the longest in the batch. Reported: the dataset's metrics (tasks/metrics.py; SST-2 and IMDB:
accuracy, F1 of the positive class, macro F1; GLUE: its official ones) and the loss; the first metric
picks the best checkpoint.
"""

import math

import torch
import torch.nn.functional as F

import data
import minibert
from tasks import metrics
from training.device import autocast


class Classification:
    kind = "classification"  # what metrics.json calls this kind of task (task_kind)
    higher_is_better = True  # every reported metric (accuracy, F1, MCC, Pearson) is better higher

    def __init__(self, dataset):
        """dataset: a data.Dataset (a named one), or a tasks.files.FileDataset (your files)."""
        self.dataset = dataset
        self.name = dataset.name
        self.title = dataset.title
        self.label_names = dataset.label_names
        self.metrics = dataset.metrics
        self.selection = dataset.metrics[0]  # the validation metric that picks the best checkpoint
        self.test_splits = tuple(dataset.test_files)  # ("test",), MNLI ("test", "test_mismatched"), or ()
        self.default_max_seq_len = dataset.max_seq_len
        self._epoch_batches = {}  # (seed, epoch, global batch) -> that epoch's batches, drawn once

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def load_model(self, name_or_path: str, dtype, device):
        return minibert.from_pretrained(name_or_path, dtype=dtype, device=device, num_labels=self.num_labels)

    def load_data(self, tokenizer, data_dir, cache_dir, max_seq_len: int, splits=None) -> None:
        """Read the splits (data/labelled.py says which is which) and tokenise them (cached)."""
        self.pad_id = tokenizer.token_to_id("[PAD]")
        self.splits = self.dataset.load(data_dir, splits or ("train", "validation", *self.test_splits))
        self.examples = {
            name: data.encode_examples(s.texts, s.labels, tokenizer, max_seq_len, cache_dir, pairs=s.pairs)
            for name, s in self.splits.items()
        }

    def notices(self) -> list[str]:
        """One line per split that skipped rows with an empty text (data/labelled.py)."""
        return [f"{s.source}: skipped {s.skipped_empty} row(s) with an empty text, the first at {s.first_skipped}"
                for s in self.splits.values() if s.skipped_empty]  # fmt: skip

    def data_report(self, global_batch: int) -> dict:
        report = {"dataset": self.dataset.source(), "label_names": list(self.label_names or ())}
        report["text_pairs"] = any(split.pairs is not None for split in self.splits.values())
        report["text_column"], report["text_pair_column"] = self.dataset.text_column, self.dataset.pair_column
        report |= {f"{split}_source": self.splits[split].source for split in self.test_splits if split in self.splits}
        for split, examples in self.examples.items():
            report[f"{split}_examples"] = len(examples)
            report[f"{split}_truncated"] = examples.truncated  # cut to max_seq_len
            report[f"{split}_skipped_empty"] = self.splits[split].skipped_empty
        if "train" in self.examples:
            lengths = self.examples["train"].lengths
            batches = data.bucketed_batches(lengths, global_batch, data.seeded_generator(0, 0))
            report["padding_fraction"] = data.padding_fraction(lengths, batches)  # of the training batches
        return report

    def batches_per_epoch(self, global_batch: int) -> int:
        return math.ceil(len(self.examples["train"]) / global_batch)  # every example, every epoch

    def train_batch(self, seed: int, epoch: int, index: int, global_batch: int) -> dict[str, torch.Tensor]:
        """Batch `index` of `epoch`: length-bucketed, in a seeded order (resumable), padded to its longest."""
        key = (seed, epoch, global_batch)
        if key not in self._epoch_batches:
            lengths = self.examples["train"].lengths
            self._epoch_batches = {key: data.bucketed_batches(lengths, global_batch, data.seeded_generator(*key[:2]))}
        return self.examples["train"].batch(self._epoch_batches[key][index], self.pad_id)

    def count(self, batch) -> torch.Tensor:
        """What the loss is a mean over: the examples."""
        return torch.tensor(batch["labels"].numel())

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())  # real tokens, padding not counted

    def logits(self, model, batch) -> torch.Tensor:
        segments = batch.get("token_type_ids") if model.config.type_vocab_size else None  # DistilBERT: none
        return model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=segments)  # (B, K)

    def loss(self, model, batch) -> torch.Tensor:
        logits = self.logits(model, batch)  # (B, K)
        if logits.shape[0] == 0:  # a data-parallel process with no example in the last, short batch
            return logits.sum()  # zero, with a gradient of zero
        return self.loss_of(logits.float(), batch["labels"])  # mean over the B examples

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction=reduction)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)  # (B,) the most likely class

    def metric(self, name: str, predictions: torch.Tensor, labels: torch.Tensor) -> float:
        return metrics.classification(name, predictions, labels, self.num_labels)

    def sample_batch(self, split: str, n: int) -> dict[str, torch.Tensor]:
        return self.examples[split].batch(list(range(min(n, len(self.examples[split])))), self.pad_id)

    @torch.no_grad()
    def evaluate(self, model, split: str, batch_size: int, device, precision: str) -> dict:
        """The loss and the dataset's metrics over the split, in batches sorted by length."""
        examples = self.examples[split]
        order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])  # least padding
        was_training = model.training
        model.eval()
        loss_sum, predictions, labels = 0.0, [], []
        for i in range(0, len(order), batch_size):
            batch = {k: v.to(device) for k, v in examples.batch(order[i : i + batch_size], self.pad_id).items()}
            with autocast(device, precision):
                logits = self.logits(model, batch).float()  # (B, K)
            loss_sum += self.loss_of(logits, batch["labels"], reduction="sum").item()
            predictions.append(self.predictions(logits).cpu())
            labels.append(batch["labels"].cpu())
        model.train(was_training)
        predictions, labels = torch.cat(predictions), torch.cat(labels)
        result = {"loss": loss_sum / len(labels)}
        result |= {name: self.metric(name, predictions, labels) for name in self.metrics}
        return result | {"examples": len(labels)}

    def describe(self, result: dict) -> str:
        return f"loss {result['loss']:.4f}, " + ", ".join(f"{name} {result[name]:.4f}" for name in self.metrics)
