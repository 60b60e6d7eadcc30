"""Internal coordinates of CG frames (numpy or torch arrays shaped (..., n_beads, 3), lengths in Å)."""

from __future__ import annotations

import numpy as np


def dihedral(x, i: int, j: int, k: int, l: int) -> np.ndarray:  # noqa: E741
    """Dihedral angle i-j-k-l in degrees, in (−180, 180], IUPAC sign convention."""
    x = np.asarray(x, dtype=float)
    b0 = x[..., i, :] - x[..., j, :]
    b1 = x[..., k, :] - x[..., j, :]
    b2 = x[..., l, :] - x[..., k, :]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    xx = np.sum(v * w, axis=-1)
    yy = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.degrees(np.arctan2(yy, xx))


def ramachandran(x) -> tuple[np.ndarray, np.ndarray]:
    """(φ, ψ) in degrees of 5-bead alanine dipeptide frames: φ = beads 0-1-2-3, ψ = beads 1-2-3-4."""
    return dihedral(x, 0, 1, 2, 3), dihedral(x, 1, 2, 3, 4)
