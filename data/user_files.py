"""Your own files: --train-file (and --validation-file, --test-file) as classification, regression or masked-LM
data, with the flags and defaults of transformers' run_glue.py / run_mlm.py in this project's style.

Columns, when not named with --text-column / --text-pair-column / --label-column:
  text and pair  the first of the pairs (sentence1, sentence2), (premise, hypothesis), (question1, question2),
                 (question, sentence) the file has; else a single text, the first of TEXTS (sentence, text,
                 review, content, document, ...). A named text column takes its partner above as the pair
                 if the file has it.
  label          the first of LABELS: label, labels, sentiment, class, category, target, score, rating (the
                 IMDB file most people download has review,sentiment).
train.py says which columns it chose. A text column that is also the label column is an error: the model
would read its own answer.
The kind of task (--task classification | regression | mlm), when left out: a text file (.txt, .raw, .tokens)
with no column named -> mlm; else from the labels (data/labels.py): every label a number and one not an
integer -> regression, otherwise classification. A .txt file is a table (data/tables.py) when a column is
named or the task has labels: Microsoft ships MRPC as tab-separated .txt files.
The split policy is data/labelled.py's: no --validation-file, a fixed slice of the training file (10%, at most
2,000 rows; for masked LM, of its blocks); no --test-file, no test metrics.
"""

from dataclasses import dataclass
from pathlib import Path

from data import labels as L
from data.files import DataError
from data.labelled import Split, hold_out, make_split, texts_of, validation_size
from data.tables import TEXT_FORMATS, Table, read_table

PAIRS = [("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"), ("question", "sentence")]
TEXTS = ["sentence", "text", "review", "content", "document", "sentence1", "question", "premise", "question1"]
LABELS = ["label", "labels", "sentiment", "class", "category", "target", "score", "rating"]
KINDS = ("classification", "regression", "mlm")  # the --task values with --train-file


@dataclass(frozen=True)
class DataFiles:
    train: str  # --train-file
    validation: str | None = None  # --validation-file; None: a fixed slice of the training file
    test: str | None = None  # --test-file; None: no test metrics
    text_column: str | None = None  # --text-column; None: guessed (see the module doc)
    text_pair_column: str | None = None  # --text-pair-column; None: guessed
    label_column: str | None = None  # --label-column; None: label, else score

    def split_files(self) -> dict[str, str]:
        """{split: file} of the files given."""
        files = {"train": self.train, "validation": self.validation, "test": self.test}
        return {split: path for split, path in files.items() if path}


def dataset_name(files: DataFiles) -> str:
    """How runs and tables name the data: the training file's name, or its folder's if it is just "train"."""
    path = Path(files.train).expanduser().resolve()
    stem = path.stem.lower()
    return path.parent.name if stem in ("train", "training", "data") and path.parent.name else stem


def text_columns(table: Table, files: DataFiles) -> tuple[str, str | None]:
    """(text column, pair column or None): the ones named, else guessed (see the module doc)."""
    names = table.columns
    text, pair = files.text_column, files.text_pair_column
    if text is None:
        guessed = next(((a, b) for a, b in PAIRS if a in names and b in names), None)
        if guessed is not None:
            return guessed[0], pair or guessed[1]
        text = next((name for name in TEXTS if name in names), None)
        if text is None:
            raise DataError(f"{table.path}: no text column found among {', '.join(names)}; "
                            "name it with --text-column (and --text-pair-column for pairs)")  # fmt: skip
    if pair is None:
        pair = next((b for a, b in PAIRS if a == text and b in names), None)
    return text, pair


def label_column(table: Table, files: DataFiles) -> str:
    if files.label_column is not None:
        return files.label_column
    found = next((name for name in LABELS if name in table.columns), None)
    if found is None:
        raise DataError(f"{table.path}: no label column found among {', '.join(table.columns)}; "
                        "name it with --label-column")  # fmt: skip
    return found


def columns_named(files: DataFiles) -> bool:
    return any(name is not None for name in (files.text_column, files.text_pair_column, files.label_column))


def read_train(files: DataFiles, kind: str | None) -> Table:
    """The training file; a .txt file as a table when a column is named or `kind` has labels."""
    return read_table(files.train, txt_is_table=columns_named(files) or kind in ("classification", "regression"))


def infer_kind(files: DataFiles, train: Table) -> str:
    """The kind of task the files are, when --task is left out (see the module doc)."""
    if train.path.suffix.lower() in TEXT_FORMATS and not columns_named(files):
        return "mlm"
    values = L.present_labels(train, label_column(train, files))
    return L.infer_kind(values)


def class_names(files: DataFiles, train: Table) -> tuple[str, ...]:
    """The classes of a classification task: the training file's labels, sorted (data/labels.py)."""
    column = label_column(train, files)
    values = L.present_labels(train, column)
    L.check_one_kind(train, column, values)
    names = L.class_names(values)
    if len(names) < 2:
        raise DataError(f"{train.path}: every label in column {column!r} is {names[0]!r}; a classifier needs at "
                        "least two classes")  # fmt: skip
    return names


def labelled_split(table: Table, files: DataFiles, label_names: tuple[str, ...] | None) -> Split:
    """One file as examples; label_names None means regression."""
    text, pair = text_columns(table, files)
    column = label_column(table, files)
    for name, flag in ((text, "--text-column"), (pair, "--text-pair-column")):
        if name == column:
            raise DataError(f"{table.path}: {flag} {name!r} is also the label column; the model would read its own "
                            "answer. Name the text with --text-column and the label with --label-column")  # fmt: skip
    if pair is not None and pair == text:
        raise DataError(f"{table.path}: --text-pair-column {pair!r} is also the text column; a pair needs two "
                        "columns. Name the second with --text-pair-column, or leave it out for one text")  # fmt: skip
    values = L.present_labels(table, column)
    if label_names is None:
        labels = L.scores(table, column, values)
    else:
        L.check_one_kind(table, column, values)
        labels = L.class_ids(table, column, label_names, values)
    pairs = texts_of(table, pair, "--text-pair-column") if pair else None
    return make_split(table, texts_of(table, text, "--text-column"), pairs, labels)


def load_labelled_files(files: DataFiles, label_names, splits, train: Table | None = None) -> dict[str, Split]:
    """{split: Split} of the requested splits (the policy in the module doc); `train`: the file, if read."""
    result = {}
    if "train" in splits or "validation" in splits:
        train_split = labelled_split(train or read_train(files), files, label_names)
        if files.validation is None:
            held = hold_out(train_split, validation_size(len(train_split)))
            result.update({k: v for k, v in held.items() if k in splits})
        elif "train" in splits:
            result["train"] = train_split
    for split in ("validation", "test"):
        path = getattr(files, split)
        if split in splits and path is not None:
            result[split] = labelled_split(read_table(path, txt_is_table=True), files, label_names)
    return result


def load_text_files(files: DataFiles, splits, train: Table | None = None) -> dict[str, dict]:
    """{split: {"lines", "source"}} for masked LM: a text file's lines, or a table's text column."""
    result = {}
    for split, path in files.split_files().items():
        if split in splits or (split == "train" and "validation" in splits and files.validation is None):
            table = train if split == "train" and train is not None else read_table(path, columns_named(files))
            column, _ = text_columns(table, files)  # a text file's one column is "text"
            result[split] = {"lines": texts_of(table, column, "--text-column"), "source": str(table.path)}
    return result


class FileDataset:
    """Your labelled files, read as a named data.Dataset is (tasks/classification.py reads either)."""

    def __init__(self, files: DataFiles, label_names: tuple[str, ...] | None, train: Table | None = None):
        self.files = files
        self.name = dataset_name(files)
        self.label_names = label_names  # None: regression
        kind = "regression" if label_names is None else "classification"
        self.title = f"{self.name} ({kind}, your files)"
        if label_names is None:
            self.metrics = ("pearson", "spearman", "mse")
        else:
            self.metrics = ("accuracy", "macro_f1", "f1") if len(label_names) == 2 else ("accuracy", "macro_f1")
        self.test_files = {"test": files.test} if files.test else {}
        self.max_seq_len = 128
        self._train = train  # the training file, if already read
        self.text_column, self.pair_column = text_columns(train, files) if train is not None else (None, None)
        self.label_column = label_column(train, files) if train is not None else None

    def load(self, data_dir, splits) -> dict[str, Split]:
        if self._train is None and ("train" in splits or "validation" in splits):
            self._train = read_train(self.files, "classification")
            self.text_column, self.pair_column = text_columns(self._train, self.files)
            self.label_column = label_column(self._train, self.files)
        return load_labelled_files(self.files, self.label_names, splits, self._train)

    def source(self) -> str:
        return str(Path(self.files.train).expanduser())


class TextFiles:
    """Your text for masked LM, read as WikiText-2 is (tasks/masked_lm.py reads either)."""

    def __init__(self, files: DataFiles, train: Table | None = None):
        self.files = files
        self.name = dataset_name(files)
        self.title = f"{self.name} (masked LM, your files)"
        self.test_files = {"test": files.test} if files.test else {}
        self.held_out = files.validation is None  # validation: a fixed slice of the training blocks
        self._train = train

    def load(self, data_dir, splits) -> dict[str, dict]:
        return load_text_files(self.files, splits, self._train)

    def source(self) -> str:
        return str(Path(self.files.train).expanduser())
