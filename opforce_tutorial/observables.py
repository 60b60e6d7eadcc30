"""Observables of CG frames and their reference histograms: what every evaluator scores.

An :class:`Observable` is a name, a function of frames (..., beads, 3) in Å and the rule for its bins.
Chain observables are named by kind and beads: ``"bond 0-1"`` (Å), ``"angle 0-1-2"`` (degrees),
``"dihedral 0-1-2-3"`` (degrees); :func:`observable` turns such a name into its Observable. A system
adds its own (alanine dipeptide's Ramachandran plane, a protein's pair distances or folded-state
RMSD: :mod:`opforce_tutorial.systems`) and passes them to the evaluators, which assume no system.

:func:`make_reference` histograms reference frames on edges set from them (bonds and angles: their
range widened by a quarter on each side; dihedrals: the full circle; an Observable may fix its own
edges) and keeps only the edges and bin probabilities, so a chapter can evaluate a model without the
dataset (:mod:`opforce_tutorial.evaluation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .geometry import bond_angles, bond_lengths, chain_indices, dihedral_angles
from .storage import atomic_write


@dataclass(frozen=True)
class Observable:
    """A named function of frames with its binning.

    ``values(frames)`` maps frames (n, beads, 3) in Å to (n,) values or (n, 2) pairs (a 2-D surface).
    ``edges(values, n_bins)`` gives the bin edges (one array per dimension) from reference values;
    ``None`` uses the range rule: the reference range widened by a quarter on each side.
    """

    name: str
    values: Callable[[np.ndarray], np.ndarray]
    edges: Callable[[np.ndarray, int], list[np.ndarray]] | None = None

    def bin_edges(self, values: np.ndarray, n_bins: int) -> list[np.ndarray]:
        if self.edges is not None:
            return self.edges(values, n_bins)
        lo, hi = np.quantile(values, [0.0, 1.0])
        pad = 0.25 * (hi - lo) if hi > lo else 1e-3 * max(abs(lo), 1.0)  # a constrained bond: one narrow peak
        return [np.linspace(lo - pad, hi + pad, n_bins + 1)]


def full_circle(values, n_bins: int) -> list[np.ndarray]:
    """Edges over (−180°, 180°] for an angle in degrees (or both angles of a pair)."""
    dims = 1 if np.ndim(values) == 1 else np.shape(values)[1]
    return [np.linspace(-180.0, 180.0, n_bins + 1)] * dims


def as_frames(frames) -> torch.Tensor:
    """Frames (..., beads, 3) as a float64 tensor (n, beads, 3)."""
    return torch.as_tensor(np.asarray(frames, dtype=np.float64)).reshape(-1, *np.shape(frames)[-2:])


def _chain_values(kind: str, beads: tuple[int, ...]):
    fn = {"bond": bond_lengths, "angle": bond_angles, "dihedral": dihedral_angles}[kind]

    def values(frames):
        with torch.no_grad():
            v = fn(as_frames(frames), torch.tensor([beads]))[:, 0].numpy()
        return v if kind == "bond" else np.degrees(v)

    return values


def dihedral_pair(name: str, first: tuple[int, int, int, int], second: tuple[int, int, int, int],
                  n_bins: int = 60) -> Observable:
    """A 2-D surface of two dihedrals (degrees) on an ``n_bins`` × ``n_bins`` grid over the full circle."""
    def values(frames):
        with torch.no_grad():
            return np.degrees(dihedral_angles(as_frames(frames), torch.tensor([first, second])).numpy())

    return Observable(name, values, lambda v, _: full_circle(v, n_bins))


def pair_distance(i: int, j: int, bin_width: float = 0.1) -> Observable:
    """``distance i-j`` (Å) between any two beads, on bins of ``bin_width`` Å over the reference's range
    widened by a quarter on each side."""
    def values(frames):
        with torch.no_grad():
            return bond_lengths(as_frames(frames), torch.tensor([[i, j]]))[:, 0].numpy()

    def edges(v, _):
        lo, hi = np.quantile(v, [0.0, 1.0])
        pad = max(0.25 * (hi - lo), bin_width)
        lo, hi = np.floor((lo - pad) / bin_width) * bin_width, np.ceil((hi + pad) / bin_width) * bin_width
        return [np.linspace(lo, hi, int(round((hi - lo) / bin_width)) + 1)]

    return Observable(f"distance {i}-{j}", values, edges)


def observable(name: str | Observable) -> Observable:
    """The Observable of a chain observable's name (``"bond 0-1"``, ``"angle 0-1-2"``, ``"dihedral 0-1-2-3"``,
    and ``"distance i-j"`` between any two beads)."""
    if isinstance(name, Observable):
        return name
    kind, _, beads = name.partition(" ")
    sizes = {"bond": 2, "angle": 3, "dihedral": 4, "distance": 2}
    try:
        idx = tuple(int(b) for b in beads.split("-"))
    except ValueError:
        idx = ()
    if kind not in sizes or len(idx) != sizes[kind]:
        raise ValueError(f"{name!r} is not a chain observable (bond i-j, angle i-j-k, dihedral i-j-k-l, distance "
                         "i-j); pass the system's Observable for it (e.g. "
                         "opforce_tutorial.systems.alanine_dipeptide.RAMACHANDRAN)")
    if kind == "distance":
        return pair_distance(*idx)
    return Observable(name, _chain_values(kind, idx), full_circle if kind == "dihedral" else None)


def observable_values(frames, name: str | Observable) -> np.ndarray:
    """Values of an observable for frames (..., beads, 3) in Å: (n,) or, for a surface, (n, 2)."""
    return observable(name).values(frames)


def chain_observables(n_beads: int) -> list[str]:
    """Every bond, angle and dihedral of a chain of ``n_beads``."""
    names = []
    for kind, size in (("bond", 2), ("angle", 3), ("dihedral", 4)):
        names += [f"{kind} " + "-".join(map(str, t)) for t in chain_indices(n_beads, size).tolist()]
    return names


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


def histogram(values: np.ndarray, edges: list[np.ndarray], weights=None) -> np.ndarray:
    """Bin probabilities of 1-D values or 2-D pairs (normalised by all samples: mass outside is lost)."""
    if len(edges) == 1:
        counts, _ = np.histogram(values, bins=edges[0], weights=weights)
    else:
        counts, *_ = np.histogram2d(values[:, 0], values[:, 1], bins=edges, weights=weights)
    total = np.sum(weights) if weights is not None else len(values)
    return counts / total


def check_finite_frames(frames, what: str) -> None:
    """Refuse empty or non-finite frames: any score of them would be meaningless."""
    x = np.asarray(frames)
    if x.size == 0 or not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(-1, *x.shape[-2:]))).any(axis=(1, 2)).sum()) if x.size else 0
        raise ValueError(f"{what}: {'no frames' if not x.size else f'{bad} frames have non-finite coordinates'}; "
                         "a score of them would be meaningless")


def make_reference(frames, observables: Sequence[str | Observable], weights=None, n_bins: int = 100
                   ) -> ReferenceHistograms:
    """Histogram reference frames (optionally with per-frame equilibrium weights) for every observable.

    Refuses non-finite frames or weights (their bin edges would be NaN and every later score against
    them meaningless); an observable without spread (a constrained bond) gets narrow bins around its value.
    """
    check_finite_frames(frames, "reference frames")
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
            raise ValueError("reference weights must be finite and non-negative with a positive sum")
    edges, probs = {}, {}
    for obs in map(observable, observables):
        v = obs.values(frames)
        edges[obs.name] = obs.bin_edges(v, n_bins)
        probs[obs.name] = histogram(v, edges[obs.name], weights)
    return ReferenceHistograms(edges, probs, n_samples=int(np.prod(np.shape(frames)[:-2])))
