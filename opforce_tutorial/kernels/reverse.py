"""The reverse-noise kernel: one kernel around every conditional density q(y | c).

Every learned flow of the package (the 1D mixture flow, the coupling flow with its auxiliaries, the
CNF) and the toy's exact posterior implement :class:`ConditionalDensity`; :class:`ReverseNoiseKernel`
is the one place that adds the noise, draws y and differentiates log q.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .base import remove_mean


class ConditionalDensity(Protocol):
    """A density q(y, a | c) of configurations y (and auxiliaries a, or ``None``) given a noised frame c.

    ``sample(c, generator)`` returns ``(y, a)`` drawn from q(·, · | c); ``log_prob(y, c, a)`` is
    log q(y, a | c), differentiable in ``y``. A density that gets ∇_y log q in the same pass as the
    draw (the CNF's forward solve of the score) also has ``sample_with_score(c, generator)`` →
    ``(y, ∇_y log q(y | c))``, which the kernel then uses instead of differentiating ``log_prob``.
    """

    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def log_prob(self, y: torch.Tensor, c: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor: ...


class ReverseNoiseKernel:
    """Noise, then map back towards the data with a conditional density q(y | c).

    The chain x → c → y with c = x + σ ε and (y, a) ~ q(·|c). The label uses only the last step's
    score, with c and the auxiliaries a held fixed:  label = k_BT ∇_y log q(y, a | c)  (kcal/mol/Å).
    Force matching on (y, label) converges to the mean force of the marginal of y; if q is the exact
    denoising posterior p(y | c) that marginal is p itself, so the labels target the true PMF from
    configurations alone.

    ``flow`` is any :class:`ConditionalDensity` (a learned conditional flow, or
    :class:`~opforce_tutorial.systems.toy1d.ExactDenoisingPosterior`); ``noise_std`` (Å) must be the σ
    it was trained with. ``mean_free=True`` (molecules, frames ``(n_frames, n_beads, 3)``) removes the
    mean over beads from the noise, as the molecular flows are trained.

    A density that reports its cost per draw (the CNF: ``last_costs`` with the solver's evaluations,
    steps and ``score_error`` in 1/Å; ``failed_chunks``) is reported here per label, the score error
    as a label error k_BT · score_error (kcal/mol/Å).
    """

    def __init__(self, flow: ConditionalDensity, noise_std: float, kbt: float, mean_free: bool = False):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be a positive standard deviation in Å, got {noise_std!r}")
        if not kbt > 0:
            raise ValueError(f"kbt must be positive (kcal/mol), got {kbt!r}")
        self.flow = flow
        self.noise_std = float(noise_std)
        self.kbt = float(kbt)
        self.mean_free = mean_free

    def noised(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """c = x + σ ε (ε mean-free over beads when ``mean_free``)."""
        eps = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        if self.mean_free:
            if x.ndim < 3:
                raise ValueError("mean_free noise needs frames shaped (n_frames, n_beads, 3)")
            eps = remove_mean(eps)
        return x + self.noise_std * eps

    @torch.no_grad()
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """y ~ q(· | c), c = x + σ ε: the positions alone, without their labels (for a CNF one forward solve
        of the positions, no divergence), from the same draws as :meth:`sample_with_forces`."""
        return self.flow.sample(self.noised(x, generator), generator=generator)[0].detach()

    def sample_with_forces(self, x: torch.Tensor, generator: torch.Generator | None = None):
        c = self.noised(x, generator)
        with_score = getattr(self.flow, "sample_with_score", None)
        if with_score is not None:
            y, score = with_score(c, generator=generator)
        else:
            with torch.no_grad():
                y, aux = self.flow.sample(c, generator=generator)
            y = y.detach().requires_grad_(True)
            with torch.enable_grad():
                (score,) = torch.autograd.grad(self.flow.log_prob(y, c.detach(), aux).sum(), y)
        return y.detach(), self.kbt * score.detach()

    @property
    def last_costs(self) -> dict[str, torch.Tensor]:
        """Per label of the last :meth:`sample_with_forces`, where the density reports costs (else empty)."""
        costs = dict(getattr(self.flow, "last_costs", {}))
        if "score_error" in costs:
            costs["label_error"] = self.kbt * costs.pop("score_error")
        return costs

    @property
    def failed_chunks(self) -> int:
        """Chunks the density gave up on so far (their labels are NaN and get dropped)."""
        return getattr(self.flow, "failed_chunks", 0)
