"""A bond length with a tilted double-well potential: the toy with an exact PMF.

The coarse-grained coordinate is a single bond length r (Å) whose potential of mean force is

.. math::

    U(r) = h\\,\\Big(\\frac{(r-r_0)^2}{w^2} - 1\\Big)^2 + t\\,(r - r_0)
    \\qquad [\\mathrm{kcal/mol}],

two wells at r ≈ r0 ± w separated by a barrier of height ≈ h, tilted by t. The Boltzmann density
p(r) ∝ exp(-U(r)/k_BT) lives on a finite domain [r_lo, r_hi] chosen so that U is larger than
100 k_BT at its ends (no Jacobian factor r² appears: U already is the PMF of the CG coordinate).

Everything a chapter compares against is exact:

* :meth:`mean_force` is -dU/dr;
* :meth:`sample` draws independent Boltzmann samples by rejection from a uniform proposal
  (acceptance exp(-(U - U_min)/k_BT), exact, no MD);
* :meth:`smoothed_density` and :meth:`smoothed_mean_force` give the noise-kernel target
  (p * N(0, σ²))(y) and k_BT d/dy log(p * N(0, σ²))(y) by quadrature on a fine grid;
* :class:`ExactDenoisingPosterior` is the ideal reverse-noise kernel p(x | c), by quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ..units import kbt as _kbt

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)


@dataclass
class DoubleWellBond:
    """Tilted double-well bond (lengths in Å, energies in kcal/mol, temperature in kelvin)."""

    r0: float = 1.5
    half_width: float = 0.15
    barrier: float = 1.5
    tilt: float = 1.0
    temperature: float = 300.0
    domain: tuple[float, float] = (1.0, 2.0)
    n_grid: int = 4001
    _u_min: float = field(init=False, repr=False)

    def __post_init__(self):
        if self.half_width <= 0 or self.barrier <= 0:
            raise ValueError("half_width and barrier must be positive")
        lo, hi = self.domain
        if not lo < self.r0 - self.half_width < self.r0 + self.half_width < hi:
            raise ValueError(f"domain {self.domain} must contain both wells")
        grid = self.grid()
        u = self.potential(grid)
        i = int(torch.argmin(u))
        dx = float(grid[1] - grid[0])
        res = minimize_scalar(lambda r: float(self.potential(torch.tensor(r, dtype=torch.float64))),
                              bounds=(float(grid[i]) - dx, float(grid[i]) + dx), method="bounded",
                              options={"xatol": 1e-12})
        self._u_min = min(float(res.fun), float(u[i]))

    # ----------------------------------------------------------------- energies and forces
    @property
    def kbt(self) -> float:
        """k_B T in kcal/mol."""
        return _kbt(self.temperature)

    def potential(self, r) -> torch.Tensor:
        """U(r) in kcal/mol (exact PMF of the CG coordinate); differentiable torch function."""
        r = _as_tensor(r)
        s = (r - self.r0) / self.half_width
        return self.barrier * (s * s - 1.0) ** 2 + self.tilt * (r - self.r0)

    def mean_force(self, r) -> torch.Tensor:
        """Exact mean force -dU/dr in kcal/mol/Å."""
        r = _as_tensor(r)
        d = r - self.r0
        w2 = self.half_width**2
        return -(4.0 * self.barrier * d * (d * d / w2 - 1.0) / w2 + self.tilt)

    def log_density(self, r) -> torch.Tensor:
        """Normalised log p(r) on the domain (−inf outside)."""
        r = _as_tensor(r)
        lo, hi = self.domain
        logp = -self.potential(r) / self.kbt - self._log_z()
        return torch.where((r >= lo) & (r <= hi), logp, torch.full_like(logp, -math.inf))

    # ----------------------------------------------------------------------- quadrature
    def grid(self, n: int | None = None) -> torch.Tensor:
        """Uniform quadrature grid over the domain (float64, Å)."""
        return torch.linspace(*self.domain, n or self.n_grid, dtype=torch.float64)

    def _log_z(self) -> float:
        g = self.grid()
        a = -self.potential(g) / self.kbt
        amax = float(a.max())
        return amax + math.log(float(torch.trapezoid(torch.exp(a - amax), g)))

    def density(self, r) -> torch.Tensor:
        """Normalised Boltzmann density p(r) (1/Å)."""
        return torch.exp(self.log_density(r))

    def pmf(self, r) -> torch.Tensor:
        """Exact PMF -k_BT log p(r), shifted to zero at its minimum on ``r`` (kcal/mol)."""
        f = -self.kbt * self.log_density(r)
        return f - f[torch.isfinite(f)].min()

    def bin_probabilities(self, edges) -> np.ndarray:
        """Exact probability mass of p in each histogram bin (sums to ≈ 1 over the domain)."""
        edges = np.asarray(edges, dtype=float)
        g = self.grid(20001).numpy()
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (self.density(g[1:]) + self.density(g[:-1])).numpy() * np.diff(g))])
        return np.diff(np.interp(edges, g, cdf, left=0.0, right=cdf[-1]))

    def _smoothing_weights(self, y: torch.Tensor, noise_std: float):
        """Quadrature weights w_i(y) ∝ p(x_i) N(y; x_i, σ²) Δx and the grid x_i."""
        if not noise_std > 0:
            raise ValueError(f"noise_std must be positive (Å), got {noise_std!r}")
        x = self.grid()
        dx = float(x[1] - x[0])
        logp = self.log_density(x)
        log_w = logp[None, :] - 0.5 * ((y[:, None] - x[None, :]) / noise_std) ** 2
        log_w = log_w - math.log(noise_std) - _LOG_SQRT_2PI + math.log(dx)
        return x, log_w

    def smoothed_density(self, y, noise_std: float) -> torch.Tensor:
        """(p * N(0, σ²))(y): density of y = x + σ ε, x ~ p, by quadrature (1/Å)."""
        y = _as_tensor(y).reshape(-1)
        out = [torch.logsumexp(self._smoothing_weights(chunk, noise_std)[1], dim=1) for chunk in y.split(2048)]
        return torch.exp(torch.cat(out))

    def smoothed_mean_force(self, y, noise_std: float) -> torch.Tensor:
        """k_BT d/dy log(p * N(0, σ²))(y) in kcal/mol/Å: what noise-kernel force matching converges to.

        By Tweedie's formula this equals k_BT (E[x | y] - y) / σ², evaluated by quadrature.
        """
        y = _as_tensor(y).reshape(-1)
        out = []
        for chunk in y.split(2048):
            x, log_w = self._smoothing_weights(chunk, noise_std)
            post = torch.softmax(log_w, dim=1)
            out.append((post @ x - chunk) / noise_std**2)
        return self.kbt * torch.cat(out)

    # ------------------------------------------------------------------------- sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent exact Boltzmann samples (Å), by rejection from a uniform proposal."""
        lo, hi = self.domain
        out, have = [], 0
        while have < n:
            m = max(2 * (n - have), 1024)
            r = lo + (hi - lo) * torch.rand(m, dtype=torch.float64, generator=generator)
            accept_prob = torch.exp(-(self.potential(r) - self._u_min) / self.kbt)
            keep = r[torch.rand(m, dtype=torch.float64, generator=generator) < accept_prob]
            out.append(keep)
            have += keep.numel()
        return torch.cat(out)[:n]


class ExactDenoisingPosterior:
    """The ideal reverse-noise kernel of the toy: q(y | c) = p(y) N(c; y, σ²) / (p * N)(c).

    If c = x + σε with x ~ p, then y ~ q(·|c) is again distributed as p, so kernel force matching
    with this q targets the exact mean force. Everything is by quadrature: for each c the posterior
    is tabulated on ``n_nodes`` points of [c − 8σ, c + 8σ] ∩ domain (spacing ≤ 16σ/(n_nodes − 1)), a
    cell is drawn with probability equal to its trapezoid mass and y uniformly within it (inverse-CDF
    sampling, exact up to the grid spacing). ``log_prob`` is analytic in y with the normaliser
    (p * N)(c) by quadrature. It is a :class:`~opforce_tutorial.kernels.reverse.ConditionalDensity`, as the learned flows are.
    """

    def __init__(self, system: DoubleWellBond, noise_std: float, n_nodes: int = 513):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be positive (Å), got {noise_std!r}")
        self.system = system
        self.noise_std = float(noise_std)
        self.n_nodes = n_nodes

    def _window(self, c: torch.Tensor):
        """Quadrature nodes (n, n_nodes) on [c − 8σ, c + 8σ] ∩ domain and unnormalised log-weights."""
        lo, hi = self.system.domain
        a = torch.clamp(c - 8 * self.noise_std, min=lo)
        b = torch.clamp(c + 8 * self.noise_std, max=hi)
        nodes = a[:, None] + (b - a)[:, None] * torch.linspace(0.0, 1.0, self.n_nodes, dtype=c.dtype)
        logw = self.system.log_density(nodes) - 0.5 * ((nodes - c[:, None]) / self.noise_std) ** 2
        return nodes, logw

    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        """(y, None): y ~ q(·|c), no auxiliaries."""
        flat = _as_tensor(c).reshape(-1)
        out = torch.empty_like(flat)
        for sl in torch.arange(len(flat)).split(4096):
            nodes, logw = self._window(flat[sl])
            w = torch.exp(logw - logw.max(dim=1, keepdim=True).values)
            cdf = torch.cumsum(0.5 * (w[:, 1:] + w[:, :-1]), dim=1)  # trapezoid mass per cell
            u = torch.rand(len(nodes), 1, dtype=flat.dtype, generator=generator) * cdf[:, -1:]
            cell = torch.searchsorted(cdf, u).clamp(max=self.n_nodes - 2)
            left, right = nodes.gather(1, cell), nodes.gather(1, cell + 1)
            out[sl] = (left + (right - left) * torch.rand(left.shape, dtype=flat.dtype, generator=generator)).squeeze(1)
        return out.reshape(c.shape), None

    def log_prob(self, y: torch.Tensor, c: torch.Tensor, aux: None = None) -> torch.Tensor:
        """log q(y | c) (1/Å), differentiable in ``y``; normaliser by trapezoid rule on the window."""
        s = self.noise_std
        flat = c.detach().reshape(-1)
        log_norm = []
        for chunk in flat.split(4096):
            nodes, logw = self._window(chunk)
            m = logw.max(dim=1).values
            log_norm.append(m + torch.log(torch.trapezoid(torch.exp(logw - m[:, None]), nodes, dim=1)))
        log_norm = torch.cat(log_norm).reshape(c.shape)
        return self.system.log_density(y) - 0.5 * ((c - y) / s) ** 2 - log_norm
