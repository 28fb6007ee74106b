"""Dropout, with its random numbers drawn four to a 64-bit word.

Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov, "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 2014, Section 2 ("inverted" dropout, scaled at training time):

    y = x * m / (1 - p),    m_i ~ Bernoulli(1 - p) independently          (E[y] = x)

The only cost is the mask: one random number per element. On the CPU, torch's `bernoulli_` (inside
`F.dropout`, and inside `scaled_dot_product_attention`, which has no fused kernel with dropout there)
draws them one 32-bit number at a time from a generator that runs on one thread; for BERT's
attention probabilities, B x nh x T x T numbers a layer, that was a third of a bf16 training step
(docs/performance.md). Here every random 64-bit word gives four 16-bit numbers u, and an element is
kept when u < round((1 - p) 2^16): Bernoulli(1 - p) to within 2^-17, four times fewer draws, 4-5x faster.
"""

import math

import torch
import torch.nn as nn

BITS = 16  # random bits per element: the keep probability is rounded to a multiple of 2^-16


def keep_mask(shape: torch.Size, keep: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability `keep` (to within 2^-17)."""
    n = math.prod(shape)
    # randint over every int64 but one: 64 uniform bits a word (torch draws them with one 64-bit draw).
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)  # (n/4,)
    u = words.view(torch.int16)[:n]  # (n,): four 16-bit numbers a word, uniform on [-2^15, 2^15)
    return (u < round(keep * 2**BITS) - 2 ** (BITS - 1)).view(shape)  # P(u < t - 2^15) = t / 2^16


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """y = x * m / (1 - p), m ~ Bernoulli(1 - p); x itself outside training or when p = 0."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    scale = keep_mask(x.shape, 1.0 - p, x.device).to(x.dtype) / (1.0 - p)  # m / (1 - p), in x's dtype: no casts
    return x * scale  # y = x * m / (1 - p); its backward is one multiply by the same tensor


class Dropout(nn.Module):
    """nn.Dropout, with the cheaper mask above."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p  # the probability of zeroing an element

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
