"""Sentiment classification on SST-2 or IMDB: one label per text, from the [CLS] vector.

Devlin et al. (2019), Section 4.1: the logits are a classification head over h_[CLS]
(minibert/classifier.py) and the loss is the mean cross-entropy over the batch's examples:

    loss = -(1/B) sum over examples i of log softmax(logits_i)[y_i]

The data are variable-length examples (data/examples.py) in batches of similar length (data/buckets.py),
padded to the longest in the batch. Reported: accuracy, F1 of the positive class, macro F1 and the loss
(tasks/metrics.py); the best checkpoint is the one with the highest validation accuracy.
"""

import math

import torch
import torch.nn.functional as F

import data
import minibert
from tasks import metrics
from training.device import bf16_autocast


class SentimentClassification:
    selection = "accuracy"  # the validation metric that picks the best checkpoint ...
    higher_is_better = True  # ... and which way is better

    def __init__(self, dataset: data.sentiment.Dataset):
        self.dataset = dataset
        self.name = dataset.name
        self.title = f"{dataset.name.upper()} (sentiment classification)"
        self.label_names = dataset.label_names
        self.default_max_seq_len = dataset.max_seq_len
        self._epoch_batches = {}  # (seed, epoch, global batch) -> that epoch's batches, drawn once

    def load_model(self, name_or_path: str, dtype, device):
        return minibert.from_pretrained(name_or_path, dtype=dtype, device=device, num_labels=len(self.label_names))

    def load_data(self, tokenizer, data_dir, cache_dir, max_seq_len: int, splits=data.SPLITS) -> None:
        """Read the splits (see data/sentiment.py for the split policy) and tokenise them (cached)."""
        self.pad_id = tokenizer.token_to_id("[PAD]")
        self.examples = {
            split: data.encode_examples(content["texts"], content["labels"], tokenizer, max_seq_len, cache_dir)
            for split, content in data.load_sentiment(self.dataset, data_dir, splits).items()
        }

    def data_report(self, global_batch: int) -> dict:
        d = self.dataset
        report = {"dataset": d.repo, "test_split": f"{d.repo}/{d.test_file}", "label_names": list(d.label_names)}
        for split, examples in self.examples.items():
            report[f"{split}_examples"] = len(examples)
            report[f"{split}_truncated"] = examples.truncated  # cut to max_seq_len
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
        return model(batch["input_ids"], attention_mask=batch["attention_mask"])  # (B, K)

    def loss(self, model, batch) -> torch.Tensor:
        logits = self.logits(model, batch)  # (B, K)
        if logits.shape[0] == 0:  # a data-parallel process with no example in the last, short batch
            return logits.sum()  # zero, with a gradient of zero
        return F.cross_entropy(logits.float(), batch["labels"])  # mean over the B examples

    def sample_batch(self, split: str, n: int) -> dict[str, torch.Tensor]:
        return self.examples[split].batch(list(range(min(n, len(self.examples[split])))), self.pad_id)

    @torch.no_grad()
    def evaluate(self, model, split: str, batch_size: int, device) -> dict:
        """Loss, accuracy, F1 (positive class) and macro F1 over the split, in batches sorted by length."""
        examples = self.examples[split]
        order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])  # least padding
        was_training = model.training
        model.eval()
        loss_sum, predictions, labels = 0.0, [], []
        for i in range(0, len(order), batch_size):
            batch = {k: v.to(device) for k, v in examples.batch(order[i : i + batch_size], self.pad_id).items()}
            with bf16_autocast(device):
                logits = self.logits(model, batch).float()  # (B, K)
            loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
            predictions.append(logits.argmax(dim=-1).cpu())
            labels.append(batch["labels"].cpu())
        model.train(was_training)
        predictions, labels = torch.cat(predictions), torch.cat(labels)
        return {
            "loss": loss_sum / len(labels),
            "accuracy": metrics.accuracy(predictions, labels),
            "f1": metrics.f1(predictions, labels, positive=1),
            "macro_f1": metrics.macro_f1(predictions, labels, len(self.label_names)),
            "examples": len(labels),
        }

    def describe(self, result: dict) -> str:
        return f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}, F1 {result['f1']:.4f}"
