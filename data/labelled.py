"""Labelled examples (a text, or a pair of texts, and a label) and the split policy shared by every
classification and regression task: the named datasets of the hub (data/sentiment.py, data/glue.py) and
a user's own files (data/user_files.py).

Split policy, the same for every run whatever its --seed:
  test        the split the dataset's authors label for evaluation. GLUE hides its test labels, so, as
              every paper reports GLUE, its official validation split is the test set (the hidden test
              file is never read); IMDB has a labelled test split; a user's --test-file.
  validation  a fixed, seeded slice of the training split, held out of training (or a user's
              --validation-file). It picks the best checkpoint, so the test split is looked at once, at the
              end. Its size: the dataset's own (SST-2 872, IMDB 1,000), else 10% of the training split, at
              most 2,000 examples.
  train       the rest of the training split.

An example with an empty text (either text of a pair) is skipped, counted per split (`<split>_skipped_empty`
in metrics.json) and reported in one line by train.py; every other row becomes exactly one example.

Named datasets come from --data-dir DIR (the hub's parquet files, directly in DIR or under the repo's
sub-folder, e.g. DIR/rte/train-00000-of-00001.parquet), else from the dataset repo on the Hugging Face
Hub, downloaded into the HF cache (data/files.py).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.files import DataError, hub_file, local_file
from data.tables import Table, read_parquet

SPLIT_SEED = 1234  # the validation slice depends on this constant only, never on a run's --seed
MAX_HELD_OUT = 2000  # at most this many training examples are held out as the validation split


@dataclass(frozen=True)
class Dataset:
    name: str  # the --task name
    title: str  # how tables and cards name the task
    repo: str  # the dataset repo on the Hugging Face Hub
    train_file: str  # path in the repo of the labelled training split
    test_files: dict  # reported split ("test", MNLI's "test_mismatched") -> path in the repo (see the module doc)
    text_column: str  # the column of the (first) text
    pair_column: str | None  # the column of the second text of a pair; None for single texts
    label_names: tuple[str, ...] | None  # label id -> name; None for a regression task (one score per example)
    metrics: tuple[str, ...]  # the reported metrics (tasks/metrics.py); the first picks the best checkpoint
    max_seq_len: int = 128  # tokens per example, [CLS] and [SEP]s included; longer ones are truncated
    validation_size: int | None = None  # held out of train as validation; None: validation_size(len(train))

    def load(self, data_dir: str | None, splits) -> dict:
        return load_labelled(self, data_dir, splits)

    def source(self) -> str:
        return self.repo


@dataclass
class Split:
    texts: list[str]  # the (first) text of each example
    pairs: list[str] | None  # the second text of each pair; None for single texts
    labels: np.ndarray  # (n,) int64 class ids, or float32 scores for regression
    source: str  # the file it was read from
    skipped_empty: int = 0  # rows left out because a text was empty
    first_skipped: str = ""  # where the first of them is ("line 7"), for the one line that reports them

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> "Split":
        pairs = None if self.pairs is None else [self.pairs[i] for i in rows]
        return Split([self.texts[i] for i in rows], pairs, self.labels[rows], self.source, 0)


def validation_size(n_train: int) -> int:
    return min(MAX_HELD_OUT, max(1, n_train // 10))


def hold_out(train: Split, size: int) -> dict[str, Split]:
    """{"validation": a fixed, seeded slice of `size` examples, "train": the rest}, each in file order."""
    if len(train) <= size:
        raise DataError(f"{train.source}: {len(train)} examples, too few to hold out {size} for validation; "
                        "give a --validation-file, or more training examples")  # fmt: skip
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train))  # fixed: the same slice every run
    validation, rest = train.subset(np.sort(order[:size])), train.subset(np.sort(order[size:]))
    rest.skipped_empty, rest.first_skipped = train.skipped_empty, train.first_skipped
    return {"validation": validation, "train": rest}


def texts_of(table: Table, column: str, flag: str) -> list[str]:
    """The column as texts: missing values (null) are empty texts; anything else must be a string."""
    values = table.column(column, flag)
    texts = []
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{table.path}: {table.where(i)} has {value!r} in the text column {column!r}, "
                            f"not a text; is {column!r} the right column ({flag})?")  # fmt: skip
        texts.append(value or "")
    return texts


def make_split(table: Table, texts: list[str], pairs: list[str] | None, labels: np.ndarray) -> Split:
    """The rows as examples, those with an empty text skipped and counted (said in one line)."""
    has_text = [bool(texts[i].strip() and (pairs is None or pairs[i].strip())) for i in range(len(texts))]
    split = Split(texts, pairs, labels, str(table.path)).subset(np.flatnonzero(has_text))
    split.skipped_empty = has_text.count(False)
    if split.skipped_empty:
        split.first_skipped = table.where(has_text.index(False))
    if not len(split):
        raise DataError(f"{table.path}: no example with a text")
    return split


def load_labelled(dataset: Dataset, data_dir: str | None = None, splits=("train", "validation", "test")) -> dict:
    """{split: Split} for the requested splits of a named dataset (see the module doc for the policy)."""
    result = {}
    if "train" in splits or "validation" in splits:
        train = read_split(dataset, dataset.train_file, data_dir)
        size = dataset.validation_size or validation_size(len(train))
        result.update({k: v for k, v in hold_out(train, size).items() if k in splits})
    for split, repo_file in dataset.test_files.items():
        if split in splits:
            result[split] = read_split(dataset, repo_file, data_dir)
    return result


def read_split(dataset: Dataset, repo_file: str, data_dir: str | None) -> Split:
    """One parquet file of the dataset, every label checked to be one of its classes (or a number)."""
    if data_dir is None:
        path = hub_file(dataset.repo, repo_file)
    else:
        try:
            path = local_file(
                data_dir, [Path(repo_file).name, repo_file], f"{dataset.name} file {Path(repo_file).name}"
            )
        except DataError as e:
            tables = sorted(p.name for p in Path(data_dir).expanduser().glob("*.[tc]sv"))
            if not tables:
                raise
            train = next((name for name in tables if "train" in name), tables[0])
            raise DataError(f"{e}. It has {', '.join(tables)}: your own files go in with --train-file "
                            f"{Path(data_dir) / train} (and --validation-file, --test-file), not --task "
                            f"{dataset.name}") from None  # fmt: skip
    table = read_parquet(path)
    texts = texts_of(table, dataset.text_column, "the dataset's text column")
    pairs = texts_of(table, dataset.pair_column, "the dataset's pair column") if dataset.pair_column else None
    labels = table.column("label", "the dataset's label column")
    for i, label in enumerate(labels):
        if dataset.label_names is None:
            ok = isinstance(label, (int, float)) and not isinstance(label, bool)
        else:
            ok = isinstance(label, int) and 0 <= label < len(dataset.label_names)
        if not ok:
            names = ", ".join(f"{i} = {name}" for i, name in enumerate(dataset.label_names or ()))
            expected = f"outside the {dataset.name} classes ({names})" if names else "not a number"
            raise DataError(f"{path}: {table.where(i)} has label {label!r}, {expected}")
    dtype = np.int64 if dataset.label_names is not None else np.float32
    return make_split(table, texts, pairs, np.asarray(labels, dtype=dtype))
