"""Gaussian noise kernel: κ(y | x) = N(y; x, σ² I)."""

from __future__ import annotations

import torch

from .base import remove_mean


class NoiseKernel:
    """Add Gaussian noise of standard deviation ``noise_std`` (Å) and label with its score.

    y = x + σ ε,  label = k_BT ∇_y log N(y; x, σ²) = k_BT (x − y) / σ²  (kcal/mol/Å).

    Force matching on these labels converges to k_BT ∇ log(p * N(0, σ²)): the mean force of a
    smoothed density (denoising score matching), not of p itself.

    ``mean_free=True`` (for molecules, frames shaped ``(n_beads, 3)``) removes the centre of mass of
    the noise so that the label has no net force a translation-invariant force field could not fit;
    the noise then lives in the mean-free subspace and the label is still its exact score there.
    """

    def __init__(self, noise_std: float, kbt: float, mean_free: bool = False):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be a positive standard deviation in Å, got {noise_std!r}")
        if not kbt > 0:
            raise ValueError(f"kbt must be positive (kcal/mol), got {kbt!r}")
        self.noise_std = float(noise_std)
        self.kbt = float(kbt)
        self.mean_free = mean_free

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = x + σ ε, the positions alone (the same draw :meth:`sample_with_forces` makes)."""
        eps = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        if self.mean_free:
            if x.ndim < 3:
                raise ValueError("mean_free noise needs frames shaped (n_frames, n_beads, 3)")
            eps = remove_mean(eps)
        return x + self.noise_std * eps

    def sample_with_forces(self, x: torch.Tensor, generator: torch.Generator | None = None):
        y = self.sample(x, generator)
        return y, self.kbt * (x - y) / self.noise_std**2
