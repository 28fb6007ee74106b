"""Which directions of W an update amplifies (LoRA, Hu et al., ICLR 2022, §7.3, Table 7).

Project W onto the r-dimensional subspace of ΔW: with U (out, r) and V (in, r) the top-r left- and
right-singular vectors of ΔW, ||U^T W V||_F is how much of W lies in the directions ΔW uses. The paper
compares it with the same projection onto W's own top-r directions and onto random ones, and reads the
amplification factor

    ||ΔW||_F / ||U^T W V||_F     (U, V from ΔW)

as how strongly the update boosts directions that W has but does not emphasise: its W_q at r = 4 on
GPT-3 gives ||U^T W V||_F = 0.32 (ΔW's directions), 21.67 (W's), 0.02 (random), and a factor of about 21.5.
A ΔW that repeated W's top directions would project like W's own; one unrelated to W, like random ones.
"""

import torch


def top_directions(m: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U (out, r), V (in, r)): the top-r left- and right-singular vectors of m."""
    u, _, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return u[:, :r], vh[:r].T


def projected_norm(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """||U^T W V||_F."""
    return float(torch.linalg.matrix_norm(u.T @ w.double() @ v))  # (r, out) (out, in) (in, r) -> (r, r)


def amplification(w: torch.Tensor, delta: torch.Tensor, r: int, seed: int = 0) -> dict:
    """The projections of W onto ΔW's, W's and random top-r directions, ||ΔW||_F, and the factor."""
    g = torch.Generator().manual_seed(seed)
    random_u = torch.linalg.qr(torch.randn(w.shape[0], r, generator=g, dtype=torch.float64)).Q  # (out, r)
    random_v = torch.linalg.qr(torch.randn(w.shape[1], r, generator=g, dtype=torch.float64)).Q  # (in, r)
    on_delta = projected_norm(w, *top_directions(delta, r))
    return {
        "delta_directions": on_delta,
        "w_directions": projected_norm(w, *top_directions(w, r)),
        "random_directions": projected_norm(w, random_u, random_v),
        "delta_norm": float(torch.linalg.matrix_norm(delta.double())),
        "factor": float(torch.linalg.matrix_norm(delta.double())) / on_delta if on_delta > 0 else float("inf"),
    }
