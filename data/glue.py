"""GLUE: the General Language Understanding Evaluation benchmark, by name (--task cola, mrpc, ...).

Wang, Singh, Michael, Hill, Levy, Bowman, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding", ICLR 2019, Table 1: single sentences (CoLA, SST-2), sentence pairs for similarity
and paraphrase (MRPC, QQP, STS-B) and for inference (MNLI, QNLI, RTE). The LoRA paper (Hu et al., ICLR 2022,
Table 2) and the SoRA paper (Ding et al., EMNLP 2023) report these tasks.

The files are the hub's nyu-mll/glue parquet layout, <task>/{train,validation,test}-00000-of-00001.parquet
(MNLI: validation_matched and validation_mismatched). GLUE's test labels are hidden, so the split policy of
data/labelled.py applies: the official validation split is the test set (MNLI: both, reported as `test_`
for matched and `test_mismatched_` for mismatched), a fixed slice of the training split the validation set.
The metrics are GLUE's official ones, the first of each picking the best checkpoint: CoLA Matthews
correlation; STS-B (a regression on 0-5 similarity scores) Pearson and Spearman; MRPC and QQP F1 and
accuracy; the others accuracy. SST-2 is `--task sst2` (data/sentiment.py: the same split from stanfordnlp/sst2).
"""

from data.labelled import Dataset

REPO = "nyu-mll/glue"
FILE = "{task}/{split}-00000-of-00001.parquet"


def glue(task: str, title: str, columns: tuple, label_names, metrics: tuple, test_splits=None) -> Dataset:
    test_splits = test_splits or {"test": "validation"}  # reported split -> GLUE's split name
    return Dataset(
        name=task,
        title=title,
        repo=REPO,
        train_file=FILE.format(task=task, split="train"),
        test_files={ours: FILE.format(task=task, split=theirs) for ours, theirs in test_splits.items()},
        text_column=columns[0],
        pair_column=columns[1] if len(columns) > 1 else None,
        label_names=label_names,
        metrics=metrics,
    )


GLUE = {
    "cola": glue("cola", "CoLA (acceptability)", ("sentence",), ("unacceptable", "acceptable"),
                 ("matthews_correlation",)),
    "mrpc": glue("mrpc", "MRPC (paraphrase)", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 ("f1", "accuracy")),
    "qqp": glue("qqp", "QQP (duplicate questions)", ("question1", "question2"), ("not_duplicate", "duplicate"),
                ("f1", "accuracy")),
    "stsb": glue("stsb", "STS-B (similarity, regression)", ("sentence1", "sentence2"), None,
                 ("pearson", "spearman")),
    "mnli": glue("mnli", "MNLI (inference)", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 ("accuracy",), {"test": "validation_matched", "test_mismatched": "validation_mismatched"}),
    "qnli": glue("qnli", "QNLI (question answering inference)", ("question", "sentence"),
                 ("entailment", "not_entailment"), ("accuracy",)),
    "rte": glue("rte", "RTE (inference)", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
                ("accuracy",)),
}  # fmt: skip
