"""The kernel interface shared by every label source.

A kernel κ(y | x) turns a configuration x into a new configuration y and a force label
k_BT ∇_y log κ(y | x) (kcal/mol/Å). Force matching on (y, label) converges to the mean force of
the pushed-forward density (Kp)(y) = ∫ κ(y|x) p(x) dx, because
∇(Kp)(y) = ∫ ∇_y κ(y|x) p(x) dx = (Kp)(y) · E[∇_y log κ(y|x) | y].

Shapes: ``x`` is ``(n_frames, *dims)``; a molecular frame is ``(n_beads, 3)``, the 1D toy has
``dims == ()``. Returned labels have the shape of ``y``.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Kernel(Protocol):
    def sample_with_forces(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw y ~ κ(·|x) for every frame and return (y, k_BT ∇_y log κ(y|x))."""
        ...


def remove_mean(v: torch.Tensor, bead_dim: int = -2) -> torch.Tensor:
    """Subtract the mean over beads (centre of mass for equal masses) along ``bead_dim``."""
    return v - v.mean(dim=bead_dim, keepdim=True)


def keep_finite(y: torch.Tensor, forces: torch.Tensor, *extra: torch.Tensor):
    """Drop frames whose position or label has any non-finite entry (never zero-fill).

    Returns ``(y, forces, *extra, n_dropped)`` with the failing frames removed from every array.
    """
    dims = tuple(range(1, y.ndim))
    ok = torch.isfinite(y).all(dim=dims) if dims else torch.isfinite(y)
    ok &= torch.isfinite(forces).all(dim=dims) if dims else torch.isfinite(forces)
    n_dropped = int((~ok).sum())
    return (y[ok], forces[ok], *(e[ok] for e in extra), n_dropped)
