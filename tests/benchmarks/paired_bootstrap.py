"""How much of a difference between two runs is the test set's own: a paired bootstrap over the test
examples (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 6; for NLP, Koehn 2004).

Every seed of every method meets the same test examples, so the seeds' spread cannot show the error that
comes from which examples the test set happened to hold. This takes two runs' predictions on one test
set, draws the examples with replacement (the same draw for both runs), scores both on each draw, and
reports the spread of the difference: its standard error from the test set alone. It is small where the
two runs agree on most examples (their errors cancel) and large where they disagree on many.

    python predict.py RUN_A --file test.parquet --output a.csv      # predict.py's output, with `label`
    python predict.py RUN_B --file test.parquet --output b.csv
    python -m tests.benchmarks.paired_bootstrap a.csv b.csv --metric accuracy

The cells of the GLUE suite keep no per-example predictions, so this is run on the run folders a session
still has (docs/results.md says which). Used by hand only.
"""

import argparse

import torch

from data.tables import read_table
from tasks import metrics

REGRESSION = ("pearson", "spearman")


def predictions(path: str, metric: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(the input columns, labels, predictions) from predict.py's output on a labelled file; a class is its
    label id, the order of predict.py's probability_<name> columns."""
    columns = read_table(path).columns
    if "label" not in columns or "prediction" not in columns:
        raise SystemExit(f"{path}: no label and prediction columns; run predict.py on a file with labels")
    inputs = {k: v for k, v in columns.items() if k != "prediction" and not k.startswith("probability")}
    names = [c.removeprefix("probability_") for c in columns if c.startswith("probability_")]
    try:
        if metric in REGRESSION:
            predicted = torch.tensor([float(v) for v in columns["prediction"]])
            return inputs, torch.tensor([float(v) for v in columns["label"]]), predicted
        predicted = torch.tensor([names.index(v) for v in columns["prediction"]])
        return inputs, torch.tensor([int(v) for v in columns["label"]]), predicted
    except ValueError as error:
        raise SystemExit(f"{path}: its predictions do not fit --metric {metric} ({error})") from None


def score(metric: str, predicted: torch.Tensor, labels: torch.Tensor) -> float:
    if metric in REGRESSION:
        return metrics.regression(metric, predicted, labels)
    classes = int(max(labels.max(), predicted.max())) + 1  # a draw may lack a class; MCC ignores empty ones
    return metrics.classification(metric, predicted, labels, num_classes=classes)


def paired_standard_error(
    metric: str, labels: torch.Tensor, a: torch.Tensor, b: torch.Tensor, draws: int = 2000, seed: int = 0
) -> float:
    """The standard deviation, over `draws` resamples of the examples, of score(a) - score(b)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    differences = []
    for _ in range(draws):
        i = torch.randint(n, (n,), generator=generator)  # (n,) one draw of the examples, with replacement
        differences.append(score(metric, a[i], labels[i]) - score(metric, b[i], labels[i]))
    return torch.tensor(differences).std().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="predict.py's output (CSV or JSON Lines) of the first run, with a label column")
    parser.add_argument("b", help="the second run's, on the same file")
    parser.add_argument("--metric", default="accuracy", help="accuracy, f1, matthews_correlation, pearson, spearman")
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap resamples (default 2000)")
    args = parser.parse_args()
    inputs, labels, a = predictions(args.a, args.metric)
    inputs_b, _, b = predictions(args.b, args.metric)
    if inputs != inputs_b:
        raise SystemExit("the two files do not hold the same labelled examples in the same order")
    ours, theirs = score(args.metric, a, labels), score(args.metric, b, labels)
    se = paired_standard_error(args.metric, labels, a, b, args.draws)
    print(
        f"{args.metric}: {100 * ours:.1f} against {100 * theirs:.1f}, difference {100 * (ours - theirs):+.1f} "
        f"± {100 * se:.1f} (the test set's standard error, {args.draws} draws, {len(labels)} examples)"
    )
    if args.metric not in REGRESSION:
        print(f"the two runs predict differently on {100 * (a != b).float().mean().item():.0f}% of the examples")


if __name__ == "__main__":
    main()
