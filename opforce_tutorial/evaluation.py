"""Evaluators, one per observable, on histograms shared with a small saved reference.

The observables and their reference histograms are defined in :mod:`opforce_tutorial.observables`; a
system's own observables (alanine dipeptide's Ramachandran plane, ...) come from
:mod:`opforce_tutorial.systems` and are passed in: nothing here assumes a system. :func:`evaluate`
histograms model frames on the reference's edges and reports each observable's Jensen–Shannon
divergence next to its finite-sample floor: the JS that the same number of independent samples from
the reference itself would show.

Populations of a system's states (alanine dipeptide's basins, a protein's folded state) come with block
errors (:func:`state_populations`).
Forces are checked without any model by integration by parts, ⟨F·∇h⟩ = −k_BT⟨Δh⟩, along the bonds
(:func:`integration_by_parts_check`) and along the dihedrals (:func:`dihedral_integration_by_parts_check`).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from .analysis import block_mean, js_divergence, js_floor, state_populations
from .geometry import chain_indices, dihedral_angles
from .observables import (Observable, ReferenceHistograms, chain_observables, check_finite_frames, histogram,
                          make_reference, observable, observable_values)

__all__ = ["Observable", "ReferenceHistograms", "chain_observables", "make_reference", "observable_values", "evaluate",
           "unvisited_fraction", "replica_bootstrap_js",
           "state_populations", "mirror_asymmetry", "mirror_energy_asymmetry", "integration_by_parts_check",
           "dihedral_integration_by_parts_check"]

def evaluate(frames, reference: ReferenceHistograms, observables: Sequence[str | Observable] | None = None,
             floor_draws: int = 20) -> dict:
    """{observable: {"js", "js_floor", "n_samples"}} of model frames against the reference histograms.

    ``observables``: the chain observables' names and the system's own Observables to score (default:
    every observable of the reference, which must then all be chain observables).

    Samples outside the reference edges count against the model (the model histogram is normalised by
    all samples, and the JS of two normalised histograms is taken after adding the lost mass to a
    virtual "outside" bin). The floor assumes independent samples, so correlated trajectories should be
    judged against it as a lower bound.
    """
    check_finite_frames(frames, "frames to evaluate")
    out = {}
    for obs in map(observable, observables or list(reference.probabilities)):
        name, v = obs.name, obs.values(frames)
        if name not in reference.probabilities:
            raise ValueError(f"the reference has no histogram of {name!r}; it has {sorted(reference.probabilities)}")
        p_ref, p_mod = _with_outside(reference, name, v)
        out[name] = {"js": js_divergence(p_ref, p_mod), "js_floor": js_floor(p_ref, len(v), n_draws=floor_draws),
                     "n_samples": len(v)}
    return out


def _with_outside(reference: ReferenceHistograms, name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's and the values' histograms on the reference's edges, each with the mass outside them
    appended as one more bin."""
    p_mod = histogram(values, reference.edges[name]).ravel()
    return tuple(np.append(p, max(0.0, 1.0 - p.sum())) for p in (reference.probabilities[name].ravel(), p_mod))


def replica_bootstrap_js(trajectory, reference: ReferenceHistograms, obs: str | Observable, n_resamples: int = 200,
                         seed: int = 0) -> dict:
    """JS of one observable of a simulation of independent replicas, with its sampling error.

    ``trajectory`` (time, replicas, beads, 3). The replicas are independent, the frames within one are not,
    so the error is the standard deviation of the JS over ``n_resamples`` resamples of whole replicas with
    replacement: ``{"js", "sd", "n_resamples"}``. Two models whose JS differ by less than their combined
    ``sd`` are not told apart by their simulations (another training seed may still move both).
    """
    traj = np.asarray(trajectory)
    if traj.ndim != 4 or traj.shape[1] < 2:
        raise ValueError(f"expected a trajectory (time, replicas >= 2, beads, 3), got shape {traj.shape}")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples}")
    check_finite_frames(traj, "frames to evaluate")
    obs = observable(obs)
    if obs.name not in reference.probabilities:
        raise ValueError(f"the reference has no histogram of {obs.name!r}")
    n_time, n_rep = traj.shape[:2]
    v = np.asarray(obs.values(traj)).reshape(n_time, n_rep, -1)

    def js(replicas):
        sample = v[:, replicas].reshape(n_time * len(replicas), -1)
        return js_divergence(*_with_outside(reference, obs.name, sample[:, 0] if sample.shape[1] == 1 else sample))

    rng = np.random.default_rng(seed)
    resampled = [js(rng.integers(0, n_rep, n_rep)) for _ in range(n_resamples)]
    return {"js": js(np.arange(n_rep)), "sd": float(np.std(resampled, ddof=1)), "n_resamples": n_resamples}


def unvisited_fraction(frames, reference: ReferenceHistograms, observables: Sequence[str | Observable]) -> float:
    """Fraction of frames (..., beads, 3) in which at least one of the 1-D ``observables`` falls where the
    reference never went: in a bin it left empty, or outside its edges. A model whose angles close below
    any the data hold, or whose bonds are squeezed by an energy hole, shows here before its JS says why."""
    check_finite_frames(frames, "frames to evaluate")
    outside = None
    for obs in map(observable, observables):
        if obs.name not in reference.probabilities or len(reference.edges[obs.name]) != 1:
            raise ValueError(f"{obs.name!r} needs a 1-D histogram in the reference")
        edges, p = reference.edges[obs.name][0], reference.probabilities[obs.name]
        v = obs.values(frames)
        bins = np.digitize(v, edges) - 1  # −1 below the first edge, len(p) at or above the last
        inside = (bins >= 0) & (bins < len(p))
        empty = ~inside
        empty[inside] = p[bins[inside]] == 0
        outside = empty if outside is None else outside | empty
    return float(outside.mean())


def mirror_asymmetry(probabilities, kbt: float) -> np.ndarray:
    r"""The chiral part of a Ramachandran free energy: A(φ, ψ) = ½[F(φ, ψ) − F(−φ, −ψ)] (kcal/mol).

    ``probabilities`` is a histogram on a grid symmetric about 0 in both angles (the 60 × 60 grid of
    :func:`make_reference`), so bin (i, j) mirrors to (n−1−i, n−1−j); A = −½ k_BT ln[p(i, j)/p(mirror)],
    NaN where either bin is empty. A reflection of a configuration flips the sign of every dihedral, so
    A is what a mirror-blind model cannot learn (compare :func:`mirror_energy_asymmetry`).
    """
    p = np.asarray(probabilities, dtype=float)
    mirror = p[::-1, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = -0.5 * kbt * np.log(p / mirror)
    a[(p <= 0) | (mirror <= 0)] = np.nan
    return a


def mirror_energy_asymmetry(model, frames, edges, surface: Observable, batch_size: int = 8192) -> np.ndarray:
    r"""A CG model's ½[E(x) − E(x̄)] (kcal/mol) averaged over the ``frames`` in each bin of ``edges`` of a
    two-dihedral ``surface`` (φ, ψ), with x̄ the mirror image of x (z → −z), which has (−φ, −ψ). NaN in
    empty bins.

    For a model whose energy is mirror-symmetric except for terms in (φ, ψ) alone (a distance-only
    network plus a prior whose odd part is its dihedral sine terms), this is exactly the chiral part A of
    the model's Ramachandran free energy (:func:`mirror_asymmetry`): the other coordinates' contribution
    is the same for x and x̄ and cancels.
    """
    x = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    model = copy.deepcopy(model).double()  # float64, leaving the caller's model as it is
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    half = 0.5 * (model.energy_in_batches(x, batch_size) - model.energy_in_batches(x * flip, batch_size)).numpy()
    phi, psi = surface.values(np.asarray(frames)).T
    total, _, _ = np.histogram2d(phi, psi, bins=edges, weights=half)
    count, _, _ = np.histogram2d(phi, psi, bins=edges)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def integration_by_parts_check(positions, forces, kbt: float, pairs=None, n_blocks: int = 10) -> list[dict]:
    r"""Check forces against configurations with an identity every valid mean force satisfies.

    For frames from a Boltzmann density p ∝ e^{−U/k_BT} with forces F = −∇U (or any forces whose
    conditional mean given the frame is that, such as correctly mapped atomistic forces or kernel labels
    at the kernel's outputs), integration by parts gives, for a pair distance r = |x_j − x_i|,

    .. math::  ⟨(F_j − F_i) · \hat r⟩ = −k_BT ⟨Δ r⟩ = −4 k_BT ⟨1/r⟩

    (the Laplacian of r over both beads' coordinates is 2/r + 2/r). For each pair (default: the chain's
    bonds) returns the two sides, the block error of their difference (``n_blocks`` contiguous blocks of
    the time-ordered frames) and z = difference / error. |z| ≫ 2 flags a broken force map, wrong units or
    a temperature mismatch.
    """
    x = np.asarray(positions, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    if pairs is None:
        pairs = [(i, i + 1) for i in range(x.shape[1] - 1)]
    out = []
    for i, j in pairs:
        d = x[:, j] - x[:, i]
        r = np.linalg.norm(d, axis=-1)
        lhs = np.einsum("nk,nk->n", f[:, j] - f[:, i], d / r[:, None])
        rhs = -4.0 * kbt / r
        diff, err = block_mean(lhs - rhs, n_blocks)
        out.append({"pair": f"{i}-{j}", "<(F_j - F_i)·r̂>": float(lhs.mean()), "-4 kBT <1/r>": float(rhs.mean()),
                    "difference": diff, "block error": err, "z": diff / err if err > 0 else float("inf")})
    return out


def coordinate_derivatives(positions, coordinate, batch_size: int = 4096, laplacian: bool = True) -> tuple:
    """(h, ∇h, Δh) of a differentiable coordinate h (torch function of frames (n, beads, 3) → (n,)) at every
    frame, by automatic differentiation in float64; Δh (the Laplacian over all bead coordinates) is None
    unless ``laplacian``."""
    from torch.func import jacfwd, jacrev, vmap

    x = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    single = lambda frame: coordinate(frame[None])[0]  # noqa: E731
    n_coords = x.shape[1] * 3
    values, grads, laps = [], [], []
    for chunk in torch.split(x, batch_size):
        values.append(coordinate(chunk).detach().numpy())
        grads.append(vmap(jacrev(single))(chunk).numpy())
        if laplacian:
            laps.append(vmap(lambda f: jacfwd(jacrev(single))(f).reshape(n_coords, n_coords).trace())(chunk).numpy())
    return np.concatenate(values), np.concatenate(grads), np.concatenate(laps) if laplacian else None


def force_along(positions, forces: dict, kbt: float, coordinate, edges, batch_size: int = 4096) -> dict:
    r"""How hard each force set pushes along a slow coordinate h, at the same frames: the projection
    F · ∇h binned in h, and the integration-by-parts identity along h.

    ``coordinate``: a differentiable torch function of frames (n, beads, 3) → (n,) (e.g. the fraction of
    native contacts Q); ``forces``: {name: forces (n, beads, 3), or an energy model whose forces are
    evaluated at ``positions``}. For frames of the Boltzmann density, ⟨F·∇h | h⟩ is the mean force's push
    along h at each h (what sets the free energy along h, with the entropic term k_BT Δh), and any valid
    mean force obeys ⟨F · ∇h⟩ = −k_BT ⟨Δh⟩ over all frames. Comparing a trained model's projection with
    its labels' at the data's frames shows where training lost what the labels hold, without a
    simulation. Returns {"centres", "counts", name: {"mean", "stderr" (per bin; frames taken as
    independent), "lhs", "rhs", "z"}}.
    """
    x = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    h, grad, lap = coordinate_derivatives(x, coordinate, batch_size)
    which = np.digitize(h, edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    out = {"centres": 0.5 * (np.asarray(edges[1:]) + np.asarray(edges[:-1])),
           "counts": np.bincount(which[inside], minlength=len(edges) - 1)}
    for name, f in forces.items():
        if isinstance(f, torch.nn.Module):
            f = f.double().forces_in_batches(x).numpy()
        proj = np.einsum("nbk,nbk->n", np.asarray(f, dtype=np.float64), grad)
        sums = np.bincount(which[inside], proj[inside], minlength=len(edges) - 1)
        squares = np.bincount(which[inside], proj[inside] ** 2, minlength=len(edges) - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / out["counts"]
            stderr = np.sqrt(np.maximum(squares / out["counts"] - mean ** 2, 0.0) / out["counts"])
        difference = proj + kbt * lap
        z = difference.mean() / (difference.std() / np.sqrt(len(difference)))
        out[name] = {"mean": mean, "stderr": stderr, "lhs": float(proj.mean()), "rhs": float(-kbt * lap.mean()),
                     "z": float(z)}
    return out


def dihedral_integration_by_parts_check(positions, forces, kbt: float, n_blocks: int = 10,
                                        batch_size: int = 8192) -> list[dict] | dict[str, list[dict]]:
    r"""The identity of :func:`integration_by_parts_check` along the chain's dihedrals.

    For any smooth function h of the configuration, integration by parts gives
    ⟨F · ∇h⟩ = −k_BT ⟨Δh⟩ (Δ the Laplacian over all bead coordinates). With h = cos θ and h = sin θ of
    every dihedral θ of the chain (for alanine dipeptide φ and ψ), it tests the forces along the slow
    coordinates that set the basin populations, which the bond check does not see. ∇h and Δh are
    computed from θ's own gradient and Laplacian by the chain rule,

    .. math:: ∇\cos θ = -\sin θ\,∇θ, \quad Δ\cos θ = -\cos θ\,|∇θ|^2 - \sin θ\,Δθ,
              \qquad ∇\sin θ = \cos θ\,∇θ, \quad Δ\sin θ = -\sin θ\,|∇θ|^2 + \cos θ\,Δθ,

    with ∇θ and Δθ of all dihedrals at once by automatic differentiation (float64). Returns one row per
    test function, as :func:`integration_by_parts_check`.

    ``forces`` may also be a dict of force sets at the same positions (e.g. several CG models' forces at
    the data's frames: a model whose Boltzmann density is the data's passes, without simulating it);
    the derivatives are computed once and the result is a dict of row lists.
    """
    from torch.func import jacfwd, jacrev, vmap

    force_sets = forces if isinstance(forces, dict) else {None: forces}
    x = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    for f in force_sets.values():
        if x.ndim != 3 or x.shape != np.shape(f) or x.shape[1] < 4:
            raise ValueError(f"positions {tuple(x.shape)} and forces {np.shape(f)} must be (n, beads ≥ 4, 3)")
    quads = chain_indices(x.shape[1], 4)
    n_coords = 3 * x.shape[1]

    def theta(frame):
        return dihedral_angles(frame, quads)

    def laplacian(frame):  # (dihedrals,): trace of each dihedral's Hessian
        return jacfwd(jacrev(theta))(frame).reshape(len(quads), n_coords, n_coords).diagonal(dim1=1, dim2=2).sum(-1)

    angles, grads, laps = [], [], []
    for chunk in torch.split(x, batch_size):
        angles.append(theta(chunk).numpy())
        grads.append(vmap(jacrev(theta))(chunk).numpy())  # (n, dihedrals, beads, 3)
        laps.append(vmap(laplacian)(chunk).numpy())
    th, g, lap = np.concatenate(angles), np.concatenate(grads), np.concatenate(laps)
    g2 = np.einsum("ndbk,ndbk->nd", g, g)
    cos, sin = np.cos(th), np.sin(th)
    lap_h = {"cos": -cos * g2 - sin * lap, "sin": -sin * g2 + cos * lap}
    grad_factor = {"cos": -sin, "sin": cos}  # ∇h = factor · ∇θ
    results = {}
    for key, f in force_sets.items():
        f_dot_g = np.einsum("nbk,ndbk->nd", np.asarray(f, dtype=np.float64), g)
        rows = []
        for d, quad in enumerate(quads.tolist()):
            for name in ("cos", "sin"):
                lhs, rhs = grad_factor[name][:, d] * f_dot_g[:, d], -kbt * lap_h[name][:, d]
                diff, err = block_mean(lhs - rhs, n_blocks)
                rows.append({"function": f"{name} dihedral {'-'.join(map(str, quad))}", "<F·∇h>": float(lhs.mean()),
                             "-kBT <Δh>": float(rhs.mean()), "difference": diff, "block error": err,
                             "z": diff / err if err > 0 else float("inf")})
        results[key] = rows
    return results if isinstance(forces, dict) else results[None]
