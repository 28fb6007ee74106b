"""The paired bootstrap (tests/benchmarks/paired_bootstrap.py): the test set's own standard error of a
difference between two runs, against its closed form for accuracy, and predict.py's output read back."""

import csv
import math

import torch

from tasks import metrics
from tests.benchmarks.paired_bootstrap import paired_standard_error, predictions, score


def test_the_bootstrap_error_of_an_accuracy_difference_is_its_closed_form():
    """With d_i = (a right) - (b right) per example, the difference's standard error is sd(d) / sqrt(n): here
    60 examples only a gets right, 40 only b, 300 both or neither; and 0 for two identical runs."""
    labels = torch.zeros(400, dtype=torch.long)
    a, b = labels.clone(), labels.clone()
    a[:40] = 1  # b alone right on 40
    b[40:100] = 1  # a alone right on 60
    d = (a == labels).double() - (b == labels).double()
    closed_form = d.std().item() / math.sqrt(len(d))  # about 0.025
    assert abs(paired_standard_error("accuracy", labels, a, b) - closed_form) < 0.1 * closed_form
    assert paired_standard_error("accuracy", labels, a, a.clone()) == 0.0


def test_predictions_are_read_back_from_predict_pys_output(tmp_path):
    """A class is its position among the probability_<name> columns; the input columns are kept to check
    that two files hold the same examples."""
    path = tmp_path / "a.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label", "prediction", "probability", "probability_no", "probability_yes"])
        writer.writerows([["x", 1, "yes", 0.9, 0.1, 0.9], ["y", 1, "no", 0.6, 0.6, 0.4]])
    inputs, labels, predicted = predictions(str(path), "accuracy")
    assert labels.tolist() == [1, 1] and predicted.tolist() == [1, 0]
    assert inputs == {"sentence": ["x", "y"], "label": ["1", "1"]}


def test_a_draw_without_one_class_is_still_scored():
    """A resample of a three-class test set may hold no true example of a class that a run predicts."""
    predicted, labels = torch.tensor([2, 0, 1, 0]), torch.tensor([0, 1, 0, 0])
    expected = metrics.matthews_correlation(predicted, labels, num_classes=3)
    assert score("matthews_correlation", predicted, labels) == expected
