"""tasks: what a run learns. Each task is its data, its objective and its metrics; train.py runs one
loop for all of them, evaluate.py and predict.py use the same objects.

    task = tasks.get("rte")                                # a named task: wikitext2, sst2, imdb, or GLUE's
    task = tasks.from_files(data.DataFiles("train.csv", test="test.csv"))   # your files; kind inferred
    task = tasks.from_run(metrics)                         # what a finished run learnt (its metrics.json)
    model = task.load_model("bert-base-uncased", dtype=None, device="cpu")   # with this task's head
    task.load_data(tokenizer, data_dir, cache_dir, max_seq_len)            # reads and tokenises the splits
    batch = task.train_batch(seed, epoch, index, global_batch)             # dict of tensors, seeded
    loss = task.loss(model, batch)                         # mean over task.count(batch) tokens or examples
    result = task.evaluate(model, "validation", batch_size, device, "fp32")  # {"loss", ...metrics}

Files: masked_lm.py (masked LM), classification.py (K classes, single texts or pairs), regression.py (one
score), metrics.py (accuracy, F1, Matthews, Pearson, Spearman).
"""

import data
from data import user_files
from data.files import DataError
from tasks.classification import Classification
from tasks.masked_lm import MaskedLM
from tasks.regression import Regression

TASKS = ("wikitext2", *data.DATASETS)  # the named --task choices
KINDS = user_files.KINDS  # the --task choices with --train-file: classification, regression, mlm


def get(name: str) -> MaskedLM | Classification:
    """A named task."""
    if name == "wikitext2":
        return MaskedLM()
    if name in data.DATASETS:
        dataset = data.DATASETS[name]
        return Classification(dataset) if dataset.label_names is not None else Regression(dataset)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")


def from_files(files: data.DataFiles, kind: str | None = None, label_names=None) -> MaskedLM | Classification:
    """Your files as a task of `kind` (None: inferred, data/user_files.py). A classification task's classes
    come from the training file unless `label_names` gives them (a finished run's)."""
    train = None
    if kind is None or (kind == "classification" and label_names is None):
        train = user_files.read_train(files, kind)
    if kind is None:
        kind = user_files.infer_kind(files, train)
    if kind == "mlm":
        unused = [flag for flag, value in (("--text-pair-column", files.text_pair_column),
                                           ("--label-column", files.label_column)) if value is not None]  # fmt: skip
        if unused:
            raise DataError(f"{' and '.join(unused)}: masked LM reads one text column and no labels; leave it "
                            "out, or pass --task classification or regression")  # fmt: skip
        return MaskedLM(user_files.TextFiles(files, train))
    if kind == "regression":
        return Regression(user_files.FileDataset(files, None, train))
    names = tuple(label_names) if label_names else user_files.class_names(files, train)
    return Classification(user_files.FileDataset(files, names, train))


def from_run(run: dict) -> MaskedLM | Classification:
    """The task a finished run learnt, from its metrics.json (your files: the same files and classes)."""
    if run.get("data_files"):
        return from_files(data.DataFiles(**run["data_files"]), run["task_kind"], run.get("label_names"))
    return get(run["task"])
