"""Internal coordinates of CG frames shaped (..., n_beads, 3), lengths in Å.

The torch functions (``bond_lengths``, ``bond_angles``, ``dihedral_angles``) are
differentiable and used by the priors; ``dihedral`` and ``ramachandran`` take and return numpy arrays
in degrees, for analysis. Angles are computed with ``atan2`` (stable near 0 and π).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))


def bond_lengths(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """|x_j − x_i| for index pairs (P, 2), bonded or not; returns (..., P) in Å."""
    return (x[..., pairs[:, 1], :] - x[..., pairs[:, 0], :]).norm(dim=-1)



def bond_angles(x: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
    """Angle i-j-k at bead j for index triples (A, 3); returns (..., A) in radians, in [0, π]."""
    a = x[..., triples[:, 0], :] - x[..., triples[:, 1], :]
    b = x[..., triples[:, 2], :] - x[..., triples[:, 1], :]
    return torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1))


def dihedral_angles(x: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """Dihedral i-j-k-l for index quadruples (D, 4); returns (..., D) in radians, in (−π, π], IUPAC sign."""
    b0 = x[..., quads[:, 0], :] - x[..., quads[:, 1], :]
    b1 = x[..., quads[:, 2], :] - x[..., quads[:, 1], :]
    b2 = x[..., quads[:, 3], :] - x[..., quads[:, 2], :]
    b1 = b1 / b1.norm(dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1  # components perpendicular to the central bond
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.linalg.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def chain_indices(n_beads: int, size: int) -> torch.Tensor:
    """Consecutive index tuples (i, …, i + size − 1) along a chain: bonds (2), angles (3), dihedrals (4)."""
    return torch.arange(n_beads - size + 1)[:, None] + torch.arange(size)[None, :]


def dihedral(x, i: int, j: int, k: int, l: int) -> np.ndarray:  # noqa: E741
    """Dihedral angle i-j-k-l in degrees, in (−180, 180], IUPAC sign convention (numpy in and out)."""
    with torch.no_grad():
        return np.degrees(dihedral_angles(_as_tensor(x), torch.tensor([[i, j, k, l]]))[..., 0].cpu().numpy())
