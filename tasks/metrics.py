"""Evaluation metrics, written out (no scikit-learn or scipy; the tests compare with both).

Classification, with predictions and true labels over the test set; for a class c:
    precision_c = TP_c / (TP_c + FP_c)      recall_c = TP_c / (TP_c + FN_c)
    F1_c = 2 precision_c recall_c / (precision_c + recall_c) = 2 TP_c / (2 TP_c + FP_c + FN_c)
  f1        F1 of the positive class (label 1), as GLUE (MRPC, QQP) and scikit-learn's f1_score report it;
  macro_f1  the unweighted mean of F1_c over the classes, which does not favour the larger class;
            a class never predicted and never present has no F1 (0/0); it is taken as 0, as scikit-learn does.
  matthews_correlation  (CoLA's metric; Matthews 1975, in the K-class form of Gorodkin 2004), with c the
            correct predictions, s the examples, p_k and t_k the times class k is predicted and is true:
                MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))
            for two classes the familiar (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a
            factor under the root is 0 (every prediction, or every label, the same class).
Regression (STS-B's metrics), predictions y' and labels y:
  pearson   r = sum (y' - mean y')(y - mean y) / sqrt(sum (y' - mean y')^2 sum (y - mean y)^2)
  spearman  Pearson's r of the ranks, tied values all getting the mean of the ranks they span
  mse       mean (y' - y)^2
"""

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).float().mean().item()


def f1(predictions: torch.Tensor, labels: torch.Tensor, positive: int = 1) -> float:
    """F1 of class `positive`: 2 TP / (2 TP + FP + FN)."""
    tp = ((predictions == positive) & (labels == positive)).sum().item()
    fp = ((predictions == positive) & (labels != positive)).sum().item()
    fn = ((predictions != positive) & (labels == positive)).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    return sum(f1(predictions, labels, c) for c in range(num_classes)) / num_classes


def matthews_correlation(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    s = len(labels)
    c = (predictions == labels).sum().item()
    p = torch.bincount(predictions, minlength=num_classes).double()  # (K,) times each class is predicted
    t = torch.bincount(labels, minlength=num_classes).double()  # (K,) times each class is true
    denominator = (s**2 - (p * p).sum().item()) * (s**2 - (t * t).sum().item())
    return (c * s - (p * t).sum().item()) / denominator**0.5 if denominator > 0 else 0.0


def pearson(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    x, y = predictions.double() - predictions.double().mean(), labels.double() - labels.double().mean()
    denominator = ((x * x).sum() * (y * y).sum()).sqrt().item()
    return (x * y).sum().item() / denominator if denominator > 0 else 0.0


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks; tied values get the mean of the ranks they span (e.g. [10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order].tolist()
    result = torch.empty(len(values), dtype=torch.float64)
    start = 0
    while start < len(values):
        end = start + 1
        while end < len(values) and sorted_values[end] == sorted_values[start]:
            end += 1  # [start, end) is one run of equal values, ranks start+1 ... end
        result[order[start:end]] = (start + 1 + end) / 2  # their mean rank
        start = end
    return result


def spearman(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return pearson(ranks(predictions), ranks(labels))


def mse(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return ((predictions.double() - labels.double()) ** 2).mean().item()


def classification(name: str, predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """The classification metric `name` (accuracy, f1, macro_f1, matthews_correlation)."""
    if name == "accuracy":
        return accuracy(predictions, labels)
    if name == "f1":
        return f1(predictions, labels, positive=1)
    if name == "macro_f1":
        return macro_f1(predictions, labels, num_classes)
    if name == "matthews_correlation":
        return matthews_correlation(predictions, labels, num_classes)
    raise ValueError(f"unknown classification metric {name!r}")


def regression(name: str, predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """The regression metric `name` (pearson, spearman, mse)."""
    return {"pearson": pearson, "spearman": spearman, "mse": mse}[name](predictions, labels)
