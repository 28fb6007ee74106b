"""tasks/metrics.py against its references: scikit-learn (F1, macro F1, Matthews) and scipy (Pearson,
Spearman with ties), on random and degenerate inputs, and the tie ranks by hand."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch

from tasks import metrics


@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_classification_metrics_equal_scikit_learn(num_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(num_classes, size=300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(num_classes, size=300))  # 60% copied
    p, y = torch.from_numpy(predictions), torch.from_numpy(labels)
    assert metrics.matthews_correlation(p, y, num_classes) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12
    )
    assert metrics.macro_f1(p, y, num_classes) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, average="macro"), abs=1e-12
    )
    assert metrics.f1(p, y) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, labels=[1], average="macro"), abs=1e-12
    )
    assert metrics.accuracy(p, y) == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))


def test_matthews_degenerate_is_zero():
    labels = torch.tensor([0, 1, 1, 0])
    always_one = torch.ones(4, dtype=torch.long)
    assert (
        metrics.matthews_correlation(always_one, labels, 2)
        == 0.0
        == sklearn.metrics.matthews_corrcoef(labels.numpy(), always_one.numpy())
    )
    assert metrics.matthews_correlation(labels, labels, 2) == 1.0


def test_ranks_by_hand():
    assert metrics.ranks(torch.tensor([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert metrics.ranks(torch.tensor([3.0, 1.0, 3.0, 3.0, 2.0])).tolist() == [4.0, 1.0, 4.0, 4.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = np.round(rng.uniform(0, 5, size=200), 1)  # STS-B-like scores, with many ties
    predictions = np.round(labels + rng.normal(0, 1.0, size=200), 0)  # rounded: ties in the predictions too
    p, y = torch.from_numpy(predictions).float(), torch.from_numpy(labels).float()
    assert metrics.pearson(p, y) == pytest.approx(scipy.stats.pearsonr(predictions, labels).statistic, abs=1e-6)
    assert metrics.spearman(p, y) == pytest.approx(scipy.stats.spearmanr(predictions, labels).statistic, abs=1e-6)
    assert metrics.mse(p, y) == pytest.approx(float(np.mean((predictions - labels) ** 2)), rel=1e-6)
