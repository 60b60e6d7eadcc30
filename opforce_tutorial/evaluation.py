"""Evaluators, one per observable, on histograms shared with a small saved reference.

Observables of a CG chain are named by kind and beads: ``"bond 0-1"`` (Å), ``"angle 0-1-2"`` (degrees),
``"dihedral 0-1-2-3"`` (degrees) and, for 5-bead alanine dipeptide, ``"ramachandran"`` (φ = 0-1-2-3,
ψ = 1-2-3-4 on a 60 × 60 grid over (−180°, 180°]²). :func:`make_reference` histograms reference frames
on edges set from them (bonds and angles: their range widened by a quarter on each side; dihedrals:
the full circle) and keeps only the edges and bin probabilities, so a chapter can evaluate a model
without the dataset. :func:`evaluate` histograms model frames on the same edges and reports each
observable's Jensen–Shannon divergence next to its finite-sample floor: the JS that the same number of
independent samples from the reference itself would show.

Basin populations (alanine dipeptide β/PII, αR, αL) come with block errors (:func:`basin_populations`).
Forces are checked without any model by integration by parts, ⟨F·∇h⟩ = −k_BT⟨Δh⟩, along the bonds
(:func:`integration_by_parts_check`) and along the dihedrals (:func:`dihedral_integration_by_parts_check`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .analysis import js_divergence, js_floor
from .storage import atomic_write
from .geometry import bond_angles, bond_lengths, chain_indices, dihedral_angles

RAMACHANDRAN_BINS = 60


def observable_values(frames, name: str) -> np.ndarray:
    """Values of the observable ``name`` for frames (..., beads, 3) in Å: (n,) or, for "ramachandran", (n, 2)."""
    x = torch.as_tensor(np.asarray(frames, dtype=np.float64)).reshape(-1, *np.shape(frames)[-2:])
    with torch.no_grad():
        if name == "ramachandran":
            return np.degrees(dihedral_angles(x, torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])).numpy())
        kind, beads = name.split(" ")
        idx = torch.tensor([[int(b) for b in beads.split("-")]])
        fn = {"bond": bond_lengths, "angle": bond_angles, "dihedral": dihedral_angles}[kind]
        values = fn(x, idx)[:, 0].numpy()
        return values if kind == "bond" else np.degrees(values)


def chain_observables(n_beads: int, ramachandran: bool = False) -> list[str]:
    """Every bond, angle and dihedral of a chain (and the Ramachandran plane when asked)."""
    names = []
    for kind, size in (("bond", 2), ("angle", 3), ("dihedral", 4)):
        names += [f"{kind} " + "-".join(map(str, t)) for t in chain_indices(n_beads, size).tolist()]
    return names + (["ramachandran"] if ramachandran else [])


@dataclass
class ReferenceHistograms:
    """Edges and bin probabilities of every observable of a reference set, and its number of samples."""

    edges: dict[str, list[np.ndarray]]
    probabilities: dict[str, np.ndarray]
    n_samples: int

    def save(self, path: str | Path) -> None:
        arrays = {"n_samples": self.n_samples}
        for name, p in self.probabilities.items():
            arrays[f"{name}|p"] = p
            for k, e in enumerate(self.edges[name]):
                arrays[f"{name}|edges{k}"] = e
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceHistograms":
        d = np.load(path)
        names = sorted({k.split("|")[0] for k in d.files if "|" in k})
        edges = {n: [d[k] for k in sorted(f for f in d.files if f.startswith(n + "|edges"))] for n in names}
        return cls(edges=edges, probabilities={n: d[f"{n}|p"] for n in names}, n_samples=int(d["n_samples"]))


def _histogram(values: np.ndarray, edges: list[np.ndarray], weights=None) -> np.ndarray:
    if len(edges) == 1:
        counts, _ = np.histogram(values, bins=edges[0], weights=weights)
    else:
        counts, *_ = np.histogram2d(values[:, 0], values[:, 1], bins=edges, weights=weights)
    total = np.sum(weights) if weights is not None else len(values)
    return counts / total


def _check_finite(frames, what: str) -> None:
    x = np.asarray(frames)
    if x.size == 0 or not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(-1, *x.shape[-2:]))).any(axis=(1, 2)).sum()) if x.size else 0
        raise ValueError(f"{what}: {'no frames' if not x.size else f'{bad} frames have non-finite coordinates'}; "
                         "a score of them would be meaningless")


def make_reference(frames, names: list[str], weights=None, n_bins: int = 100) -> ReferenceHistograms:
    """Histogram reference frames (optionally with per-frame equilibrium weights) for every observable.

    Refuses non-finite frames or weights (their bin edges would be NaN and every later score against
    them meaningless); an observable without spread (a constrained bond) gets narrow bins around its value.
    """
    _check_finite(frames, "reference frames")
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
            raise ValueError("reference weights must be finite and non-negative with a positive sum")
    edges, probs = {}, {}
    for name in names:
        v = observable_values(frames, name)
        if name == "ramachandran":
            edges[name] = [np.linspace(-180.0, 180.0, RAMACHANDRAN_BINS + 1)] * 2
        elif name.startswith("dihedral"):
            edges[name] = [np.linspace(-180.0, 180.0, n_bins + 1)]
        else:
            lo, hi = np.quantile(v, [0.0, 1.0])
            pad = 0.25 * (hi - lo) if hi > lo else 1e-3 * max(abs(lo), 1.0)  # a constrained bond: one narrow peak
            edges[name] = [np.linspace(lo - pad, hi + pad, n_bins + 1)]
        probs[name] = _histogram(v, edges[name], weights)
    return ReferenceHistograms(edges, probs, n_samples=int(np.prod(np.shape(frames)[:-2])))


def evaluate(frames, reference: ReferenceHistograms, names: list[str] | None = None, floor_draws: int = 20) -> dict:
    """{observable: {"js", "js_floor", "n_samples"}} of model frames against the reference histograms.

    Samples outside the reference edges count against the model (the model histogram is normalised by
    all samples, and the JS of two normalised histograms is taken after adding the lost mass to a
    virtual "outside" bin). The floor assumes independent samples, so correlated trajectories should be
    judged against it as a lower bound.
    """
    _check_finite(frames, "frames to evaluate")
    out = {}
    for name in names or list(reference.probabilities):
        v = observable_values(frames, name)
        p_ref = reference.probabilities[name].ravel()
        p_mod = _histogram(v, reference.edges[name]).ravel()
        with_outside = [np.append(p, max(0.0, 1.0 - p.sum())) for p in (p_ref, p_mod)]
        out[name] = {"js": js_divergence(*with_outside),
                     "js_floor": js_floor(with_outside[0], len(v), n_draws=floor_draws),
                     "n_samples": len(v)}
    return out


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


def mirror_energy_asymmetry(model, frames, edges, batch_size: int = 8192) -> np.ndarray:
    r"""A CG model's ½[E(x) − E(x̄)] (kcal/mol) averaged over the ``frames`` in each (φ, ψ) bin of ``edges``,
    with x̄ the mirror image of x (z → −z), which has (−φ, −ψ). NaN in empty bins.

    For a model whose energy is mirror-symmetric except for terms in (φ, ψ) alone (a distance-only
    network plus a prior whose odd part is its dihedral sine terms), this is exactly the chiral part A of
    the model's Ramachandran free energy (:func:`mirror_asymmetry`): the other coordinates' contribution
    is the same for x and x̄ and cancels.
    """
    x = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    model = copy.deepcopy(model).double()  # float64, leaving the caller's model as it is
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    half = 0.5 * (model.energy_in_batches(x, batch_size) - model.energy_in_batches(x * flip, batch_size)).numpy()
    phi, psi = observable_values(np.asarray(frames), "ramachandran").T
    total, _, _ = np.histogram2d(phi, psi, bins=edges, weights=half)
    count, _, _ = np.histogram2d(phi, psi, bins=edges)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


#: Alanine dipeptide basins on (φ, ψ) in degrees.
BASINS = {
    "αL (φ > 0)": lambda phi, psi: phi > 0,
    "αR": lambda phi, psi: (phi <= 0) & (psi > -120) & (psi < 50),
    "β / PII": lambda phi, psi: (phi <= 0) & ((psi >= 50) | (psi <= -120)),
}


def block_mean(values: np.ndarray, n_blocks: int = 10) -> tuple[float, float]:
    """Mean and its standard error from ``n_blocks`` contiguous blocks (for correlated series)."""
    blocks = np.array_split(np.asarray(values, dtype=float), n_blocks)
    means = np.array([b.mean() for b in blocks if len(b)])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(len(means)))


def basin_populations(frames, n_blocks: int = 10) -> dict[str, dict[str, float]]:
    """β/PII, αR and αL populations with block errors, for time-ordered frames (..., 5, 3).

    A simulation's output (n_saved, n_replicas, 5, 3) is split into blocks of replicas (which are
    independent); a single time series into contiguous time blocks.
    """
    frames = np.asarray(frames)
    if frames.ndim == 4:  # (time, replicas, beads, 3) -> replica-major, so blocks hold whole replicas
        frames = frames.transpose(1, 0, 2, 3)
    phi, psi = (a.ravel() for a in observable_values(frames, "ramachandran").T)
    return {name: dict(zip(("mean", "block_error"), block_mean(f(phi, psi), n_blocks))) for name, f in BASINS.items()}



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
