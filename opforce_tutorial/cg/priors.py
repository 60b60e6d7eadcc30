r"""Prior energies of a CG chain, fitted by Boltzmann inversion of the training positions.

Terms (positions in Å, angles in radians, energies in kcal/mol), for a chain of N beads:

.. math::

    E_\mathrm{bond} &= \sum_{i} \tfrac12 k_i (r_{i,i+1} - r_{0,i})^2 \\
    E_\mathrm{angle} &= \sum_{i} \tfrac12 k_{θ,i} (θ_{i,i+1,i+2} - θ_{0,i})^2 \\
    E_\mathrm{dihedral} &= \sum_{i} \sum_{n=1}^{M} \big[a_{i,n} \cos nφ_{i..i+3} + b_{i,n} \sin nφ_{i..i+3}\big] \\
    E_\mathrm{repulsion} &= \sum_{|i-j| \ge s} k_BT\, (σ_{ij} / r_{ij})^{6}

Boltzmann inversion. For a coordinate q with histogram p(q) and Jacobian J(q) (r² for a distance,
sin θ for an angle, 1 for a dihedral), the potential of mean force of q alone is
U(q) = −k_BT log(p(q) / J(q)) + const. The harmonic (k, q₀) and the Fourier coefficients (a, b) are the
count-weighted least-squares fits of U over the populated bins; the fits are kept (:class:`PriorFit`)
for plots. The repulsion's σ_ij is the pair's closest approach in the data (its 0.1 % quantile), so the
wall costs k_BT there and rises steeply below: it only keeps simulations out of regions the data never
visited. It acts on every pair at least s = ``repulsion_min_separation`` apart along the chain: s = 2
(the default) includes the 1-3 pairs, whose closest approach is what keeps angles from closing. A harmonic
angle term alone does not: fitted to a broad or two-peaked angle PMF (a Cα chain's), its stiffness is a few
kcal/mol/rad², and simulations of chignolin's prior with s = 3 close angles below 60° (the data never go
below 68°) in 9 % of their frames, against 0.1 % with s = 2. Models saved before the setting existed used
s = 3 (:func:`opforce_tutorial.study.build_cg_model` reads it so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..forcefield import EnergyModel
from ..geometry import bond_angles, bond_lengths, chain_indices, dihedral_angles


@dataclass
class PriorFit:
    """One fitted term, for plotting: bin centres, the inverted PMF and the fitted energy (kcal/mol)."""

    term: str
    beads: tuple[int, ...]
    centers: np.ndarray
    inverted: np.ndarray
    fitted: np.ndarray
    params: dict


class PriorEnergy(EnergyModel):
    """Bonds, angles, Fourier dihedrals and repulsion of an ``n_beads`` chain (see module docstring).

    Parameters are buffers (saved in the state dict, not trained); :func:`fit_priors` sets them.
    """

    def __init__(self, n_beads: int, n_fourier: int = 3, repulsion_min_separation: int = 2):
        super().__init__()
        if n_beads < 2:
            raise ValueError("a chain prior needs at least 2 beads")
        if repulsion_min_separation < 2:
            raise ValueError(f"repulsion_min_separation must be ≥ 2 (bonded pairs are the bond term's), "
                             f"got {repulsion_min_separation}")
        self.n_beads, self.n_fourier, self.repulsion_min_separation = n_beads, n_fourier, repulsion_min_separation
        self.register_buffer("bonds", chain_indices(n_beads, 2))
        self.register_buffer("angles", chain_indices(n_beads, 3) if n_beads >= 3 else torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("dihedrals", chain_indices(n_beads, 4) if n_beads >= 4 else torch.zeros(0, 4, dtype=torch.long))
        i, j = torch.triu_indices(n_beads, n_beads, offset=repulsion_min_separation)
        self.register_buffer("pairs", torch.stack([i, j], dim=1))
        nb, na, nd, npair = len(self.bonds), len(self.angles), len(self.dihedrals), len(self.pairs)
        for name, n in (("bond_k", nb), ("bond_r0", nb), ("angle_k", na), ("angle_theta0", na), ("repulsion_sigma", npair)):
            self.register_buffer(name, torch.zeros(n, dtype=torch.float64))
        self.register_buffer("dihedral_cos", torch.zeros(nd, n_fourier, dtype=torch.float64))
        self.register_buffer("dihedral_sin", torch.zeros(nd, n_fourier, dtype=torch.float64))
        self.register_buffer("repulsion_eps", torch.zeros((), dtype=torch.float64))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        def p(name):
            return getattr(self, name).to(x.dtype)

        e = (0.5 * p("bond_k") * (bond_lengths(x, self.bonds) - p("bond_r0")) ** 2).sum(-1)
        if len(self.angles):
            e = e + (0.5 * p("angle_k") * (bond_angles(x, self.angles) - p("angle_theta0")) ** 2).sum(-1)
        if len(self.dihedrals):
            n = torch.arange(1, self.n_fourier + 1, dtype=x.dtype, device=x.device)
            nphi = dihedral_angles(x, self.dihedrals)[..., None] * n
            e = e + (p("dihedral_cos") * torch.cos(nphi) + p("dihedral_sin") * torch.sin(nphi)).sum((-1, -2))
        if len(self.pairs):
            e = e + (p("repulsion_eps") * (p("repulsion_sigma") / bond_lengths(x, self.pairs)) ** 6).sum(-1)
        return e


def _inverted_pmf(q: np.ndarray, jacobian, kbt: float, n_bins: int, lo=None, hi=None):
    counts, edges = np.histogram(q, bins=n_bins, range=(q.min() if lo is None else lo, q.max() if hi is None else hi))
    centers = 0.5 * (edges[1:] + edges[:-1])
    ok = counts > 0
    u = np.full(n_bins, np.nan)
    u[ok] = -kbt * np.log(counts[ok] / jacobian(centers[ok]))
    return centers, u, counts


def _weighted_lstsq(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    sw = np.sqrt(weights)[:, None]
    return np.linalg.lstsq(design * sw, target * sw[:, 0], rcond=None)[0]


def _fit_harmonic(q, jacobian, kbt, n_bins):
    """(k, q₀, centres, inverted U, fitted U) from a count-weighted quadratic fit of the inverted PMF."""
    centers, u, counts = _inverted_pmf(q, jacobian, kbt, n_bins)
    ok = counts >= max(3, 1e-3 * counts.max())
    a, b, c = _weighted_lstsq(np.stack([centers[ok] ** 2, centers[ok], np.ones(ok.sum())], 1), u[ok], counts[ok])
    if a <= 0:  # not convex over the data: fall back to the Gaussian moments
        k, q0 = kbt / q.var(), q.mean()
    else:
        k, q0 = 2 * a, -b / (2 * a)
    fitted = 0.5 * k * (centers - q0) ** 2
    shift = np.nansum(counts * (u - fitted)) / counts[np.isfinite(u)].sum()
    return float(k), float(q0), centers, u - shift, fitted


def fit_priors(positions, kbt: float, n_fourier: int = 3, n_bins: int = 100, repulsion_min_separation: int = 2
               ) -> tuple[PriorEnergy, list[PriorFit]]:
    """Fit a :class:`PriorEnergy` to frames (frames, beads, 3) in Å at k_BT (kcal/mol) by Boltzmann inversion
    (repulsion on the pairs at least ``repulsion_min_separation`` apart along the chain).

    Returns the prior and one :class:`PriorFit` per term (for plots).
    """
    x = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    if x.ndim != 3 or x.shape[2] != 3 or len(x) < 10:
        raise ValueError(f"need at least 10 frames shaped (frames, beads, 3), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("positions contain non-finite values")
    prior = PriorEnergy(x.shape[1], n_fourier, repulsion_min_separation)
    fits = []
    with torch.no_grad():
        r = bond_lengths(x, prior.bonds).numpy()
        for m, beads in enumerate(prior.bonds.tolist()):
            k, r0, centers, u, fitted = _fit_harmonic(r[:, m], lambda q: q**2, kbt, n_bins)
            prior.bond_k[m], prior.bond_r0[m] = k, r0
            fits.append(PriorFit("bond", tuple(beads), centers, u, fitted, {"k (kcal/mol/Å²)": k, "r0 (Å)": r0}))
        theta = bond_angles(x, prior.angles).numpy()
        for m, beads in enumerate(prior.angles.tolist()):
            k, t0, centers, u, fitted = _fit_harmonic(theta[:, m], np.sin, kbt, n_bins)
            prior.angle_k[m], prior.angle_theta0[m] = k, t0
            fits.append(PriorFit("angle", tuple(beads), centers, u, fitted,
                                 {"k (kcal/mol/rad²)": k, "θ0 (°)": float(np.degrees(t0))}))
        phi = dihedral_angles(x, prior.dihedrals).numpy()
        n = np.arange(1, n_fourier + 1)
        for m, beads in enumerate(prior.dihedrals.tolist()):
            centers, u, counts = _inverted_pmf(phi[:, m], np.ones_like, kbt, 72, -np.pi, np.pi)
            ok = counts > 0
            design = np.concatenate([np.cos(centers[:, None] * n), np.sin(centers[:, None] * n),
                                     np.ones((len(centers), 1))], axis=1)
            coef = _weighted_lstsq(design[ok], u[ok], counts[ok])
            prior.dihedral_cos[m] = torch.as_tensor(coef[:n_fourier])
            prior.dihedral_sin[m] = torch.as_tensor(coef[n_fourier:2 * n_fourier])
            fits.append(PriorFit("dihedral", tuple(beads), centers, u - coef[-1], design[:, :-1] @ coef[:-1],
                                 {"cos": coef[:n_fourier].tolist(), "sin": coef[n_fourier:2 * n_fourier].tolist()}))
        if len(prior.pairs):
            d = bond_lengths(x, prior.pairs).numpy()
            prior.repulsion_sigma.copy_(torch.as_tensor(np.quantile(d, 1e-3, axis=0)))
            prior.repulsion_eps.fill_(kbt)
    return prior, fits
