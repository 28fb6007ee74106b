"""Regression: one score per text or pair (STS-B's 0-5 similarity, your --task regression), from [CLS].

The classification network of tasks/classification.py with one output (transformers' num_labels = 1,
problem_type "regression"), trained with the mean squared error:

    loss = (1/B) sum over examples i of (logit_i - y_i)^2

Reported: Pearson's and Spearman's correlation of predictions and targets (STS-B's official metrics) and
the MSE (tasks/metrics.py); Pearson's picks the best checkpoint.
"""

import torch
import torch.nn.functional as F

from tasks import metrics
from tasks.classification import Classification


class Regression(Classification):
    kind = "regression"

    @property
    def num_labels(self) -> int:
        return 1  # one output: the score

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.mse_loss(logits[:, 0], labels.float(), reduction=reduction)  # (B, 1) -> (B,) against (B,)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]  # (B,) the score itself

    def metric(self, name: str, predictions: torch.Tensor, labels: torch.Tensor) -> float:
        return metrics.regression(name, predictions, labels)
