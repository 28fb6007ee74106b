"""minibert/dropout.py: the mask is Bernoulli(1 - p), its four numbers a word independent, and dropout is
y = x * m / (1 - p) in value and gradient; the model draws it wherever it drops out."""

import math

import pytest
import torch

from minibert.config import BertConfig
from minibert.dropout import Dropout, dropout, keep_mask
from minibert.model import Bert

CPU = torch.device("cpu")


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.05])
def test_mask_is_bernoulli_of_keep(keep):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask(torch.Size([n]), keep, CPU)
    sd = math.sqrt(keep * (1 - keep) / n)
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - keep) < 5 * sd
    # the four 16-bit numbers of a 64-bit word: each position in the word kept as often, and independently
    slots = mask.view(-1, 4).float()  # (n/4, 4)
    assert (slots.mean(0) - keep).abs().max().item() < 5 * sd * 2
    both = (slots[:, 0] * slots[:, 3]).mean().item()
    assert abs(both - keep**2) < 5 * math.sqrt(keep**2 * (1 - keep**2) / (n // 4))


def test_odd_shapes_and_the_same_seed():
    torch.manual_seed(3)
    a = keep_mask(torch.Size([3, 5, 7]), 0.7, CPU)  # 105 elements: not a multiple of four
    torch.manual_seed(3)
    b = keep_mask(torch.Size([3, 5, 7]), 0.7, CPU)
    assert a.shape == (3, 5, 7) and torch.equal(a, b)


def test_dropout_value_and_gradient():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(2)
    y = dropout(x, 0.25)
    torch.manual_seed(2)
    mask = keep_mask(x.shape, 0.75, CPU)
    assert torch.equal(y, x.detach() * (mask / 0.75))  # y = x * m / (1 - p)
    y.sum().backward()
    assert torch.equal(x.grad, mask / 0.75)  # dy/dx = m / (1 - p)
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x.detach().bfloat16(), 0.5).dtype == torch.bfloat16  # no cast to fp32


def test_mean_is_kept():
    torch.manual_seed(0)
    x = torch.full((1_000_000,), 2.0)
    assert dropout(x, 0.1).mean().item() == pytest.approx(2.0, abs=5 * 2 * math.sqrt(0.1 / 0.9 / 1e6))


def test_module_checks_p_and_follows_train_eval():
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
    layer = Dropout(0.5).eval()
    x = torch.randn(10)
    assert layer(x) is x and "p=0.5" in repr(layer)


def test_the_model_drops_out_in_training_only_with_its_own_mask():
    """Training mode on the CPU: the written-out attention with this mask (SDPA has no fused CPU kernel with
    dropout); the same seed gives the same output, another seed another one; eval mode is deterministic."""
    config = BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                        max_position_embeddings=16)  # fmt: skip
    torch.manual_seed(0)
    model = Bert(config)
    ids = torch.randint(0, 50, (2, 8))
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(model.train().encode(ids))
    assert torch.equal(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])
    assert torch.equal(model.eval().encode(ids), model.encode(ids))
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())  # every dropout is ours
