"""The spectrum of an update: how many directions ΔW really uses.

LoRA (Hu et al., ICLR 2022, §7.2) argues that the update a task needs has a very low "intrinsic rank":
ΔW = (alpha/r) B A has rank at most r by construction. HiRA (Huang et al., ICLR 2025, §3.2, Eq. 4) makes a
high-rank update from the same factors with a Hadamard product, ΔW = W0 ⊙ (B A), whose rank can reach
min(out, in). Full fine-tuning's ΔW has no constraint. Three numbers say how many directions ΔW uses:

    rank            #{i : σ_i > tol · σ_1}, tol = 1e-3 (numerical rank; float32 rounding sits far below)
    effective rank  exp(H(p)), p_i = σ_i / Σ σ_j, H the Shannon entropy (Roy & Vetterli, EUSIPCO 2007):
                    k for k equal singular values, close to 1 when one direction dominates
    stable rank     ||ΔW||_F² / ||ΔW||_2² = Σ σ_i² / σ_1² (Rudelson & Vershynin 2007): never above the
                    rank, and insensitive to tiny singular values
"""

import torch

RANK_TOL = 1e-3  # relative to σ_1


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """σ_1 >= σ_2 >= ... of ΔW (out, in), float64 for accuracy."""
    return torch.linalg.svdvals(delta.double())


def spectrum_stats(delta: torch.Tensor) -> dict:
    s = singular_values(delta)
    if s[0] == 0:
        return {"rank": 0, "effective_rank": 0.0, "stable_rank": 0.0}
    p = s / s.sum()  # a distribution over directions
    entropy = -(p[p > 0] * p[p > 0].log()).sum()  # H(p) = -Σ p_i log p_i
    return {
        "rank": int((s > RANK_TOL * s[0]).sum()),
        "effective_rank": float(entropy.exp()),  # exp H(p)
        "stable_rank": float((s**2).sum() / s[0] ** 2),  # ||ΔW||_F² / ||ΔW||_2²
    }
