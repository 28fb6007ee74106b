"""Magnitude and direction of an update (DoRA, Liu et al., ICML 2024, §3, Eqs. 2-3 and Fig. 2).

Write a weight as magnitude times direction, W = m ⊙ V / ||V||_c (m: the norm of each column of the
paper's W (d, k), here each output unit's row of our (out, in) weight). Against the pre-trained W0,
at each step t of a run,

    ΔM_t = Σ_n |m_t^n - m_0^n| / K              the mean change of the K units' magnitudes
    ΔD_t = Σ_n (1 - cos(W_t^n, W_0^n)) / K      the mean change of their directions

The paper plots ΔD against ΔM over the checkpoints of each layer: full fine-tuning moves them in opposite
senses (a negative slope: a large change of direction comes with a small change of magnitude, or the
reverse), LoRA in the same sense (a positive slope), and DoRA like full fine-tuning.
"""

import torch


def magnitude_direction(w0: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """(ΔM, ΔD) of W against W0, both (out, in), per output unit (see the module doc)."""
    w0, w = w0.double(), w.double()
    m0, m = w0.norm(dim=1), w.norm(dim=1)  # (out,) magnitudes
    cos = (w0 * w).sum(dim=1) / (m0 * m)  # (out,) cosine of each unit's direction change
    return float((m - m0).abs().mean()), float((1 - cos).mean())


def slope_and_correlation(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of ΔD on ΔM, and Pearson's r, over (ΔM, ΔD) points."""
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    y = torch.tensor([p[1] for p in points], dtype=torch.float64)
    dx, dy = x - x.mean(), y - y.mean()
    slope = float((dx * dy).sum() / (dx * dx).sum())
    return slope, float((dx * dy).sum() / (dx.norm() * dy.norm()))
