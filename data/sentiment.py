"""SST-2 and IMDB: binary sentiment classification, where the text comes from and how it is split.

SST-2: Socher, Perelygin, Wu, Chuang, Manning, Ng, Potts, "Recursive Deep Models for Semantic
Compositionality Over a Sentiment Treebank", EMNLP 2013; the binary sentence task of GLUE (Wang et al.,
ICLR 2019). 67,349 training sentences from movie reviews, 872 validation, 1,821 test (labels hidden).
IMDB: Maas, Daly, Pham, Huang, Ng, Potts, "Learning Word Vectors for Sentiment Analysis", ACL 2011:
25,000 training and 25,000 test reviews, half positive, often longer than BERT's 512 tokens.

Split policy, the same for every run whatever its --seed:
  test        SST-2: the official validation split (GLUE's test labels are hidden, so papers report
              this split; the hidden test file is never read). IMDB: the official test split.
  validation  a fixed, seeded slice of the training split (872 sentences for SST-2, the size of its
              official validation split; 1,000 reviews for IMDB), held out of training. It picks the
              best checkpoint, so the test split is never looked at before the end.
  train       the rest of the training split.

Sources: --data-dir DIR with the hub's parquet files (directly in DIR or under the repo's sub-folder,
e.g. DIR/data/train-00000-of-00001.parquet), else the dataset repo on the Hugging Face Hub, downloaded
into the HF cache (data/files.py).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.files import DataError, hub_file, local_file, read_columns

SPLIT_SEED = 1234  # the validation slice depends on this constant only, never on a run's --seed


@dataclass(frozen=True)
class Dataset:
    name: str  # the --task name
    repo: str  # the dataset repo on the Hugging Face Hub
    train_file: str  # path in the repo of the labelled training split
    test_file: str  # path in the repo of the split reported as the test set (see the module doc)
    text_column: str  # the column holding the text
    label_names: tuple[str, ...]  # label id -> name
    max_seq_len: int  # tokens per example, [CLS] and [SEP] included; longer texts are truncated
    validation_size: int  # examples held out of the training split as the validation split


DATASETS = {
    "sst2": Dataset(
        name="sst2",
        repo="stanfordnlp/sst2",
        train_file="data/train-00000-of-00001.parquet",
        test_file="data/validation-00000-of-00001.parquet",
        text_column="sentence",
        label_names=("negative", "positive"),
        max_seq_len=128,
        validation_size=872,
    ),
    "imdb": Dataset(
        name="imdb",
        repo="stanfordnlp/imdb",
        train_file="plain_text/train-00000-of-00001.parquet",
        test_file="plain_text/test-00000-of-00001.parquet",
        text_column="text",
        label_names=("negative", "positive"),
        max_seq_len=512,
        validation_size=1000,
    ),
}


def load_sentiment(dataset: Dataset, data_dir: str | None = None, splits=("train", "validation", "test")) -> dict:
    """{split: {"texts": [str], "labels": np.ndarray (n,) int64, "source": str}} for the given splits."""
    result = {}
    if "train" in splits or "validation" in splits:
        texts, labels, source = read_split(dataset, dataset.train_file, data_dir)
        if len(texts) <= dataset.validation_size:
            raise DataError(f"{source}: {len(texts)} examples, too few to hold out {dataset.validation_size}")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))  # fixed: the same slice every run
        held_out = np.sort(order[: dataset.validation_size])
        kept = np.sort(order[dataset.validation_size :])
        for split, rows in (("validation", held_out), ("train", kept)):
            if split in splits:
                result[split] = {"texts": [texts[i] for i in rows], "labels": labels[rows], "source": source}
    if "test" in splits:
        texts, labels, source = read_split(dataset, dataset.test_file, data_dir)
        result["test"] = {"texts": texts, "labels": labels, "source": source}
    return result


def read_split(dataset: Dataset, repo_file: str, data_dir: str | None) -> tuple[list[str], np.ndarray, str]:
    """(texts, labels, source) of one parquet file, every label checked to be a class of the dataset."""
    if data_dir is None:
        path = hub_file(dataset.repo, repo_file)
    else:
        path = local_file(data_dir, [Path(repo_file).name, repo_file], f"{dataset.name} file {Path(repo_file).name}")
    columns = read_columns(path, [dataset.text_column, "label"])
    texts, labels = columns[dataset.text_column], columns["label"]
    if not texts:
        raise DataError(f"{path}: no examples")
    for row, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if not isinstance(text, str):
            raise DataError(f"{path}: row {row} has no text ({text!r})")
        if not isinstance(label, int) or not 0 <= label < len(dataset.label_names):
            names = ", ".join(f"{i} = {name}" for i, name in enumerate(dataset.label_names))
            raise DataError(f"{path}: row {row} has label {label!r}, outside the {dataset.name} classes ({names})")
    return texts, np.asarray(labels, dtype=np.int64), str(path)
