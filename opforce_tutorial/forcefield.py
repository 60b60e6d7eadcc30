"""Energy models and force matching.

Every model is an :class:`EnergyModel`: ``energy(x)`` maps frames ``(n_frames, *dims)`` to energies
``(n_frames,)`` in kcal/mol, and ``forces(x) = −∇_x energy`` (kcal/mol/Å), by autograd unless a model
supplies the analytic derivative (tests check the two agree). As in mlcg, a CG energy is a *prior*
fitted by Boltzmann inversion plus a learned correction; force matching fits the correction to
``labels − prior forces``.

Force matching minimises the mean squared force error

.. math::  L(θ) = \\frac{1}{N} \\sum_n \\big| f_n - F_θ(y_n) \\big|^2 ,

whose minimiser over all force fields is the conditional mean E[f | y], i.e. the mean force of the
density the labelled positions y were drawn from (see :mod:`opforce_tutorial.kernels.base`). For a
model linear in its parameters, F_θ(y) = Φ(y) θ, L is a linear least-squares problem, solved
exactly by :func:`fit_force_matching`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class EnergyModel(nn.Module):
    """Base class: subclasses implement ``energy``; ``forces`` defaults to −autograd gradient."""

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forces(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """−∇_x energy; ``create_graph=True`` keeps the graph so a force loss can train the parameters."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=create_graph)
        return -grad

    def forces_in_batches(self, x: torch.Tensor, batch_size: int = 4096, device=None) -> torch.Tensor:
        """:meth:`forces` of many frames, ``batch_size`` at a time on ``device`` (default: x's), without
        a graph (evaluation, not training); returned on x's device."""
        return torch.cat([self.forces(b.to(device or x.device)).detach().to(x.device) for b in torch.split(x, batch_size)])

    def energy_in_batches(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """:meth:`energy` of many frames, ``batch_size`` at a time, without a graph."""
        with torch.no_grad():
            return torch.cat([self.energy(b) for b in torch.split(x, batch_size)])


class BondEnergy1D(EnergyModel):
    """Energy of M independent 1D coordinates (a bond length per column), each harmonic prior + RBFs.

    .. math::

        E(x) = \\sum_{m=1}^{M} \\Big[ \\tfrac12 k_m (x_m - x_{0,m})^2
               + \\sum_{j=1}^{J} θ_{mj} \\exp\\big(-(x_m - μ_{mj})^2 / 2w_m^2\\big) \\Big]

    Frames are ``(n_frames, M)`` (or ``(n_frames,)`` when M = 1). :func:`fit_force_matching` sets the
    prior by Boltzmann inversion of a Gaussian fitted to the training positions (k = k_BT/Var,
    x₀ = mean) and spreads the J centres μ evenly over the range of those positions (w = spacing).
    Outside that range the RBFs vanish and the prior confines the simulation. Stacking M fitted
    models (:meth:`stack`) lets one batched Langevin run simulate all of them at once, since the
    coordinates do not interact.
    """

    def __init__(self, n_basis: int = 48, n_models: int = 1):
        super().__init__()
        if n_basis < 2:
            raise ValueError("need at least 2 basis functions")
        self.theta = nn.Parameter(torch.zeros(n_models, n_basis, dtype=torch.float64))
        self.register_buffer("centers", torch.linspace(0.0, 1.0, n_basis, dtype=torch.float64).repeat(n_models, 1))
        self.register_buffer("width", torch.full((n_models,), 1.0 / (n_basis - 1), dtype=torch.float64))
        self.register_buffer("x0", torch.zeros(n_models, dtype=torch.float64))
        self.register_buffer("k", torch.zeros(n_models, dtype=torch.float64))

    @property
    def n_models(self) -> int:
        return self.theta.shape[0]

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1 and self.n_models == 1:
            return x[:, None]
        if x.ndim != 2 or x.shape[1] != self.n_models:
            raise ValueError(f"expected frames of shape (n, {self.n_models}), got {tuple(x.shape)}")
        return x

    def _basis(self, x: torch.Tensor):
        w = self.width[:, None]
        d = x[..., None] - self.centers
        phi = torch.exp(-0.5 * (d / w) ** 2)
        return phi, -d / w**2 * phi  # φ_j(x) and dφ_j/dx

    def energy(self, x):
        xc = self._columns(x)
        phi, _ = self._basis(xc)
        e = 0.5 * self.k * (xc - self.x0) ** 2 + (phi * self.theta).sum(-1)
        return e.sum(-1)

    def forces(self, x):
        """Analytic −dE/dx, shaped like ``x``."""
        xc = self._columns(x)
        _, dphi = self._basis(xc)
        f = -self.k * (xc - self.x0) - (dphi * self.theta).sum(-1)
        return f.reshape(x.shape)

    def prior_forces(self, x):
        xc = self._columns(x)
        return (-self.k * (xc - self.x0)).reshape(x.shape)

    def basis_forces(self, x):
        """−dφ_j/dx for M = 1: the design matrix of the linear force-matching problem, (n, J)."""
        return -self._basis(x.reshape(-1, 1))[1][:, 0]

    @classmethod
    def stack(cls, models: list["BondEnergy1D"]) -> "BondEnergy1D":
        """One M-column model holding the given single-column models (same number of basis functions)."""
        if any(m.n_models != 1 or m.theta.shape != models[0].theta.shape for m in models):
            raise ValueError("stack() needs single-column models with the same number of basis functions")
        out = cls(models[0].theta.shape[1], n_models=len(models))
        with torch.no_grad():
            for name, tensor in out.state_dict().items():
                tensor.copy_(torch.cat([m.state_dict()[name] for m in models]))
        return out


@dataclass
class FitReport:
    """Force-matching losses (kcal²/mol²/Å², mean over frames and components)."""

    train_mse: float
    val_mse: float
    n_train: int
    n_val: int


def fit_force_matching(model: BondEnergy1D, positions: torch.Tensor, forces: torch.Tensor, kbt: float,
                       ridge: float = 1e-6, val_fraction: float = 0.1, seed: int = 0) -> FitReport:
    """Fit ``model`` (M = 1) to labelled positions by force matching; returns train/validation MSE.

    The harmonic prior is fitted first by Boltzmann inversion of the training positions and the RBF
    centres are spread over their range; the RBF weights then solve the ridge-regularised
    least-squares problem min_θ |f − F_prior − Φθ|² + λ N |θ|², with Φ = −dφ/dx, exactly (normal
    equations); λ = ``ridge`` only keeps the problem well conditioned.
    A random ``val_fraction`` of the frames is held out for the reported validation loss.
    """
    if model.n_models != 1:
        raise ValueError("fit one single-column model at a time, then BondEnergy1D.stack them")
    positions = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    forces = torch.as_tensor(forces, dtype=torch.float64).reshape(-1)
    if positions.shape != forces.shape:
        raise ValueError(f"positions {tuple(positions.shape)} and forces {tuple(forces.shape)} differ in shape")
    if not (torch.isfinite(positions).all() and torch.isfinite(forces).all()):
        raise ValueError("non-finite positions or labels: drop them first (kernels.keep_finite)")
    n = len(positions)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * n))
    val, train = perm[:n_val], perm[n_val:]
    with torch.no_grad():
        xt = positions[train]
        model.x0.fill_(float(xt.mean()))
        model.k.fill_(kbt / float(xt.var()))
        n_basis = model.theta.shape[1]
        model.centers.copy_(torch.linspace(float(xt.min()), float(xt.max()), n_basis, dtype=torch.float64)[None])
        model.width.fill_(float(xt.max() - xt.min()) / (n_basis - 1))
        design = model.basis_forces(xt)
        target = forces[train] - model.prior_forces(xt)
        gram = design.T @ design + ridge * len(train) * torch.eye(design.shape[1], dtype=design.dtype)
        model.theta.copy_(torch.linalg.solve(gram, design.T @ target)[None])
        mse = lambda idx: float(((model.forces(positions[idx]) - forces[idx]) ** 2).mean()) if len(idx) else float("nan")  # noqa: E731
        return FitReport(train_mse=mse(train), val_mse=mse(val), n_train=len(train), n_val=n_val)
