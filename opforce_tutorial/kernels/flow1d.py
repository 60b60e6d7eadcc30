"""A learned conditional flow for one coordinate: the chapter-1 reverse-noise kernel.

Architecture (and why). In one dimension a normalizing flow is a monotone bijection
z = T(y; c) to a standard normal base. We use the *mixture-CDF* bijection

.. math::

    z = \\Phi^{-1}\\big(F(y \\mid c)\\big), \\qquad
    F(y \\mid c) = \\sum_k \\pi_k(c)\\, \\Phi\\Big(\\frac{y - \\mu_k(c)}{s_k(c)}\\Big),

so that by the change of variables log q(y|c) = log N(z) + log|dz/dy| = log Σ_k π_k N(y; μ_k, s_k²).
This choice gives, in closed form: an exactly normalised density, exact sampling (pick a component,
draw from it, which is the same as pushing z through T⁻¹), and an exact score ∇_y log q for the
force label. A K-component mixture can represent the bimodal denoising posterior p(x | c) of a
double well, which a single affine layer cannot.

The parameters are *noise-scaled*, as Tweedie's formula E[x|c] = c + σ² ∇ log(p*N)(c) suggests:

    μ_k = c + σ² a_k / ℓ²,  s_k = σ exp(b_k),

with ℓ the data's length scale and (logits, a_k, b_k) from an MLP of ((c − loc)/ℓ, log σ). The
network outputs O(1) numbers at every noise level, and an error δa in a mean changes the label by
k_BT δa/(ℓ² e^{2b}) rather than by k_BT δμ/σ², which would blow up as σ → 0.

The flow is conditioned on σ as well as on c, so one trained model serves every noise level of a
range (the book's variance slider); :meth:`NoiseConditionalFlow1D.at` fixes σ and returns the
conditional-density interface (:class:`~opforce_tutorial.kernels.reverse.ConditionalDensity`) that
:class:`~opforce_tutorial.kernels.ReverseNoiseKernel` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class Flow1DConfig:
    """Hyper-parameters of :class:`NoiseConditionalFlow1D` (lengths in Å)."""

    loc: float
    length_scale: float
    noise_std_min: float = 0.01
    noise_std_max: float = 0.12
    n_components: int = 4
    hidden: int = 64
    n_layers: int = 3


class NoiseConditionalFlow1D(nn.Module):
    """q(y | c, σ): mixture-CDF conditional flow in 1D (see module docstring)."""

    def __init__(self, config: Flow1DConfig):
        super().__init__()
        self.config = config
        layers, width = [], 2
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        layers.append(nn.Linear(width, 3 * config.n_components))
        self.net = nn.Sequential(*layers)
        # Start near the identity q ≈ N(c, σ²), but with the component means spread apart: with
        # identical components the mixture is symmetric and gradient descent never separates them.
        last = self.net[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[config.n_components : 2 * config.n_components] = torch.linspace(-2.0, 2.0, config.n_components)

    def _mixture(self, c: torch.Tensor, noise_std: torch.Tensor | float):
        """Mixture log-weights, means and stds for each conditioning value (in c's dtype)."""
        cfg = self.config
        sigma = torch.as_tensor(noise_std, dtype=c.dtype, device=c.device).expand_as(c)
        log_sigma_ref = 0.5 * (math.log(cfg.noise_std_min) + math.log(cfg.noise_std_max))
        inp = torch.stack([(c - cfg.loc) / cfg.length_scale, torch.log(sigma) - log_sigma_ref], dim=-1)
        out = self.net(inp.to(self.net[0].weight.dtype)).to(c.dtype)
        logits, a, b = out.chunk(3, dim=-1)
        log_pi = torch.log_softmax(logits, dim=-1)
        mu = c[..., None] + sigma[..., None] ** 2 * a / cfg.length_scale**2
        s = sigma[..., None] * torch.exp(b)
        return log_pi, mu, s

    def log_prob(self, y: torch.Tensor, c: torch.Tensor, noise_std) -> torch.Tensor:
        """log q(y | c, σ) (1/Å); differentiable in y and in the parameters."""
        log_pi, mu, s = self._mixture(c, noise_std)
        z = (y[..., None] - mu) / s
        return torch.logsumexp(log_pi - 0.5 * z * z - torch.log(s) - _LOG_SQRT_2PI, dim=-1)

    def cdf(self, y: torch.Tensor, c: torch.Tensor, noise_std) -> torch.Tensor:
        """F(y | c, σ), the monotone map to the uniform (Φ⁻¹ of it is the base variable z)."""
        log_pi, mu, s = self._mixture(c, noise_std)
        return (log_pi.exp() * torch.special.ndtr((y[..., None] - mu) / s)).sum(-1)

    @torch.no_grad()
    def sample(self, c: torch.Tensor, noise_std, generator: torch.Generator | None = None) -> torch.Tensor:
        log_pi, mu, s = self._mixture(c, noise_std)
        k = torch.multinomial(log_pi.reshape(-1, log_pi.shape[-1]).exp(), 1, generator=generator).reshape(c.shape)
        eps = torch.randn(c.shape, dtype=c.dtype, device=c.device, generator=generator)
        pick = lambda t: t.gather(-1, k[..., None]).squeeze(-1)  # noqa: E731
        return pick(mu) + pick(s) * eps

    def at(self, noise_std: float) -> "_FixedNoiseFlow":
        """The flow with σ fixed, as the conditional density a reverse-noise kernel takes."""
        lo, hi = self.config.noise_std_min, self.config.noise_std_max
        if not lo * (1 - 1e-9) <= noise_std <= hi * (1 + 1e-9):
            raise ValueError(f"noise_std {noise_std} Å is outside the range this flow was trained on [{lo}, {hi}] Å")
        return _FixedNoiseFlow(self, float(noise_std))


@dataclass
class _FixedNoiseFlow:
    flow: NoiseConditionalFlow1D
    noise_std: float

    """q(y | c) at one σ: a :class:`~opforce_tutorial.kernels.reverse.ConditionalDensity` without auxiliaries."""

    def sample(self, c, generator=None):
        return self.flow.sample(c, self.noise_std, generator=generator), None

    def log_prob(self, y, c, aux=None):
        return self.flow.log_prob(y, c, self.noise_std)


@dataclass
class Flow1DTraining:
    """Optimisation settings of :func:`train_flow1d`."""

    n_steps: int = 6000
    batch_size: int = 1024
    lr: float = 3e-3
    n_data: int = 200_000
    seed: int = 0


def train_flow1d(system, training: Flow1DTraining = Flow1DTraining(), config: Flow1DConfig | None = None,
                 device: str | torch.device = "cpu", progress: bool = True):
    """Fit q(y | c, σ) by maximum likelihood on (c = x + σε, x) pairs from exact samples of ``system``.

    σ is drawn log-uniformly from the config's range for every pair, x from ``system.sample``.
    The learning rate follows a cosine schedule. Returns ``(flow, metrics)``; ``metrics`` holds the
    final training NLL and, per noise level of a validation grid, the KL divergence
    E_c KL(p(·|c) ‖ q(·|c)) = E[log p(x|c) − log q(x|c)] (nats) against the exact posterior, a Monte-Carlo
    estimate over 4000 pairs with its standard error (``kl_stderr_nats``): an estimate below zero is zero
    within that error.
    """
    from ..systems.toy1d import ExactDenoisingPosterior

    gen = torch.Generator().manual_seed(training.seed)
    torch.manual_seed(training.seed)
    x_all = system.sample(training.n_data, generator=gen)
    if config is None:
        config = Flow1DConfig(loc=float(x_all.mean()), length_scale=float(x_all.std()))
    flow = NoiseConditionalFlow1D(config).to(device)
    opt = torch.optim.Adam(flow.parameters(), lr=training.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, training.n_steps)
    x_all = x_all.to(device)
    log_lo, log_hi = math.log(config.noise_std_min), math.log(config.noise_std_max)
    bar = tqdm(range(training.n_steps), desc="train 1D flow", disable=not progress, mininterval=1.0)
    for _ in bar:
        x = x_all[torch.randint(len(x_all), (training.batch_size,), generator=gen).to(device)]
        sigma = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(x.shape, dtype=x.dtype, generator=gen)).to(device)
        c = x + sigma * torch.randn(x.shape, dtype=x.dtype, generator=gen).to(device)
        loss = -flow.log_prob(x, c, sigma).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(nll=f"{loss.item():.3f}", refresh=False)
    flow.eval()
    metrics = {"train_nll": float(loss.item()), "kl_to_exact_posterior_nats": {}, "kl_stderr_nats": {}}
    for sigma in np.geomspace(config.noise_std_min, config.noise_std_max, 5):
        x = system.sample(4000, generator=gen)
        c = x + sigma * torch.randn(x.shape, dtype=x.dtype, generator=gen)
        exact = ExactDenoisingPosterior(system, sigma).log_prob(x, c)
        with torch.no_grad():
            learned = flow.log_prob(x.to(device), c.to(device), float(sigma)).cpu()
        diff = exact - learned
        metrics["kl_to_exact_posterior_nats"][f"{sigma:.4g}"] = float(diff.mean())
        metrics["kl_stderr_nats"][f"{sigma:.4g}"] = float(diff.std() / len(diff) ** 0.5)  # Monte-Carlo error
    return flow.cpu(), metrics

