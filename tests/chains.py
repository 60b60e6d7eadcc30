"""Test helpers: CG chains built from internal coordinates, and exact samples of 1D densities."""

import numpy as np
import torch


def chain_from_internal(r, theta, phi):
    """Frames (n, B, 3) from bond lengths (n, B−1), angles (n, B−2) and dihedrals (n, B−3), in Å and radians.

    NeRF construction: bead k sits at distance r from bead k−1, at angle θ to k−2 and with dihedral φ
    about the (k−2, k−1) bond, in the IUPAC sign convention.
    """
    r, theta, phi = (np.atleast_2d(np.asarray(a, dtype=float).T).T for a in (r, theta, phi))
    n, n_beads = len(r), r.shape[1] + 1
    x = np.zeros((n, n_beads, 3))
    x[:, 1, 0] = r[:, 0]
    x[:, 2] = x[:, 1] + r[:, 1, None] * np.stack([-np.cos(theta[:, 0]), np.sin(theta[:, 0]), np.zeros(n)], 1)
    for k in range(3, n_beads):
        a, b, c = x[:, k - 3], x[:, k - 2], x[:, k - 1]
        bc = (c - b) / np.linalg.norm(c - b, axis=1, keepdims=True)
        nrm = np.cross(b - a, bc)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        rk, tk, pk = r[:, k - 1], theta[:, k - 2], phi[:, k - 3]
        local = np.stack([-rk * np.cos(tk), rk * np.sin(tk) * np.cos(pk), rk * np.sin(tk) * np.sin(pk)], 1)
        x[:, k] = c + np.einsum("nij,nj->ni", np.stack([bc, np.cross(nrm, bc), nrm], axis=2), local)
    return x


def sample_density(log_density, grid, n, rng):
    """Inverse-CDF samples of an unnormalised density on a fine grid."""
    p = np.exp(log_density(grid) - log_density(grid).max())
    cdf = np.cumsum(p) / p.sum()
    return np.interp(rng.random(n), cdf, grid)


def ala2_like(n, rng, bond_std=0.03, basins=((-75.0, -40.0, 0.3), (-150.0, 150.0, 0.65), (60.0, 40.0, 0.05))):
    """5-bead frames: Gaussian bonds/angles, (φ, ψ) from a mixture of basins ((φ, ψ) in degrees, weight)."""
    r = np.array([1.33, 1.46, 1.52, 1.33]) + bond_std * rng.standard_normal((n, 4))
    theta = np.radians([120.0, 110.0, 117.0]) + 0.05 * rng.standard_normal((n, 3))
    which = rng.choice(len(basins), n, p=[b[2] for b in basins])
    centres = np.radians(np.array([b[:2] for b in basins]))[which]
    return chain_from_internal(r, theta, centres + np.radians(12.0) * rng.standard_normal((n, 2))), which


def toy_prior(n_beads=5):
    """A chain prior with fixed, hand-set constants (kcal/mol, Å, rad)."""
    from opforce_tutorial.cg import PriorEnergy

    prior = PriorEnergy(n_beads)
    with torch.no_grad():
        prior.bond_k.fill_(50.0)
        prior.bond_r0.fill_(3.8)
        prior.angle_k.fill_(20.0)
        prior.angle_theta0.fill_(1.9)
        prior.dihedral_cos.fill_(0.3)
        prior.dihedral_sin.fill_(-0.2)
        prior.repulsion_sigma.fill_(4.0)
        prior.repulsion_eps.fill_(0.596)
    return prior
