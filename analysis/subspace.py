"""Subspace similarity: do two updates point the same way? (LoRA, Hu et al., ICLR 2022, §7.2, Eq. 4)

Take the right-singular vectors of two runs' A matrices (A: (r, in), the directions of the input each
rank reads), U_1 of A_1 and U_2 of A_2, each (in, r) with orthonormal columns sorted by singular value.
The overlap of the top-i directions of the first with the top-j of the second is

    φ(A_1, A_2, i, j) = ||U_1[:, :i]^T U_2[:, :j]||_F² / min(i, j)      in [0, 1]

1 when one span contains the other, 0 when they are orthogonal; two random i- and j-dimensional
subspaces of R^in give about max(i, j) / in. The paper finds the top directions of r = 8 and r = 64
runs overlap strongly (Fig. 3), and so do two seeds (Fig. 4): the update has a very low intrinsic rank.
"""

import torch


def right_singular_vectors(a: torch.Tensor) -> torch.Tensor:
    """(in, r) orthonormal columns: the right-singular vectors of A (r, in), largest singular value first."""
    _, _, vh = torch.linalg.svd(a.double(), full_matrices=False)  # vh: (r, in)
    return vh.T  # (in, r)


def subspace_similarity(a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    """φ(A_1, A_2, i, j) for i = 1..r1, j = 1..r2, as an (r1, r2) tensor."""
    u1, u2 = right_singular_vectors(a1), right_singular_vectors(a2)  # (in, r1), (in, r2)
    overlap = (u1.T @ u2) ** 2  # (r1, r2): squared cosines between single directions
    cumulative = overlap.cumsum(0).cumsum(1)  # [i-1, j-1] = ||U_1[:, :i]^T U_2[:, :j]||_F²
    i = torch.arange(1, u1.shape[1] + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, u2.shape[1] + 1, dtype=torch.float64)[None, :]
    return cumulative / torch.minimum(i, j)  # (r1, r2)
