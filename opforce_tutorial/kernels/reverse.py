"""Reverse-noise kernel around any conditional density q(y | c)."""

from __future__ import annotations

from typing import Protocol

import torch


class ConditionalDensity(Protocol):
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def log_prob(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...


class ReverseNoiseKernel:
    """Noise, then map back towards the data with a conditional density q(y | c).

    The chain x → c → y with c = x + σ ε and y ~ q(·|c). The label uses only the last step's score,
    with c held fixed:  label = k_BT ∇_y log q(y | c).  Force matching on (y, label) converges to the
    mean force of the marginal of y; if q is the exact denoising posterior p(y | c) that marginal is p
    itself, so the labels target the true PMF from configurations alone.

    ``flow`` is any object with ``sample(c)`` and a ``log_prob(y, c)`` differentiable in ``y``
    (a learned conditional flow, or :class:`~opforce_tutorial.systems.toy1d.ExactDenoisingPosterior`).
    ``noise_std`` (Å) must be the σ the flow was trained with.
    """

    def __init__(self, flow: ConditionalDensity, noise_std: float, kbt: float):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be a positive standard deviation in Å, got {noise_std!r}")
        if not kbt > 0:
            raise ValueError(f"kbt must be positive (kcal/mol), got {kbt!r}")
        self.flow = flow
        self.noise_std = float(noise_std)
        self.kbt = float(kbt)

    def sample_with_forces(self, x: torch.Tensor, generator: torch.Generator | None = None):
        c = x + self.noise_std * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        with torch.no_grad():
            y = self.flow.sample(c, generator=generator)
        y = y.detach().requires_grad_(True)
        with torch.enable_grad():
            logq = self.flow.log_prob(y, c.detach())
            (score,) = torch.autograd.grad(logq.sum(), y)
        return y.detach(), self.kbt * score
