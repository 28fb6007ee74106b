"""Classification metrics, written out (no scikit-learn): accuracy, F1 of one class, macro F1.

For a class c, with predictions and true labels over the test set:
    precision_c = TP_c / (TP_c + FP_c)      recall_c = TP_c / (TP_c + FN_c)
    F1_c = 2 precision_c recall_c / (precision_c + recall_c) = 2 TP_c / (2 TP_c + FP_c + FN_c)
binary F1 is F1 of the positive class (label 1), as GLUE and scikit-learn's f1_score report it;
macro F1 is the unweighted mean of F1_c over the classes, which does not favour the larger class.
A class never predicted and never present has no F1 (0/0); it is taken as 0, as scikit-learn does.
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
