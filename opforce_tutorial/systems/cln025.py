"""Chignolin (CLN025) at the CG level: 10 Cα beads, one per residue, and the observables it owns.

Besides the chain observables (9 bonds, 8 angles, 7 dihedrals), the molecule owns:

* the Cα pair distances ``distance i-j`` for |i − j| ≥ 3 (28 pairs, 0.1 Å bins);
* ``rmsd folded``: the Cα-RMSD (Å, Kabsch) to the data-defined folded reference
  (``data/cln025_folded_ca.pdb``, the centroid of the most populated 1 Å cluster of the reference runs);
* ``native contacts Q``: the fraction of native contacts (Best, Hummer & Eaton, PNAS 2013),
  Q = mean over the reference's contacts of 1 / (1 + exp(β (r − λ r₀))), contacts the pairs |i − j| ≥ 3
  closer than 8 Å in the folded reference, β = 5 Å⁻¹, λ = 1.2 (the Cα variant of their 1.8 for heavy atoms);
* ``tica``: the data's two slowest TICA coordinates (TIC1, TIC2) of all 45 Cα pair distances and the 7
  Cα dihedrals as cos/sin, with the model fitted on the reference trajectories only and saved in
  ``data/cln025_tica.npz`` (:mod:`opforce_tutorial.data.tica`), on a 60 × 60 grid over the data's range;
* its states: folded (RMSD ≤ 1 Å) and unfolded, and the core sets of transitions (≤ 1 Å folded,
  ≥ 3 Å unfolded), as the data's folding report counts them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..analysis import count_transitions
from ..geometry import chain_indices, dihedral_angles
from ..observables import Observable, chain_observables, pair_distance
from ..storage import read_json, verified
from ..structures import read_ca_pdb, rmsd
from .base import CGSystem

BEAD_NAMES = ("TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "TYR")
#: Residue masses (amu, average isotopic composition, residue = amino acid − H₂O): each Cα bead carries
#: its residue. Masses set the CG dynamics' time scale only, not its equilibrium distribution.
RESIDUE_MASSES = {"TYR": 163.18, "ASP": 115.09, "PRO": 97.12, "GLU": 129.12, "THR": 101.10, "GLY": 57.05,
                  "TRP": 186.21}
FOLDED_BELOW, UNFOLDED_ABOVE = 1.0, 3.0  # Å of Cα-RMSD to the folded reference
CONTACT_CUTOFF, Q_BETA, Q_LAMBDA = 8.0, 5.0, 1.2  # Å, 1/Å, dimensionless
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
PAIRS = [(i, j) for i in range(len(BEAD_NAMES)) for j in range(i + 3, len(BEAD_NAMES))]


@lru_cache(maxsize=None)
def folded_reference(data_dir: Path = DATA_DIR) -> np.ndarray:
    """The folded reference's Cα coordinates (10, 3) in Å, verified against ``data/registry.json``."""
    entry = read_json(data_dir / "registry.json")["cln025-folded-reference"]
    fix = "regenerate it with `opforce data build cln025 data/runs/cln025_340K_*` (see data/README.md)"
    return read_ca_pdb(verified(data_dir / entry["file"], entry["sha256"], "data file", fix))


def native_contacts(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, r₀): the pairs |i − j| ≥ 3 closer than :data:`CONTACT_CUTOFF` in ``reference``, and their distances."""
    i, j = np.array(PAIRS).T
    r0 = np.linalg.norm(reference[i] - reference[j], axis=-1)
    keep = r0 < CONTACT_CUTOFF
    return i[keep], j[keep], r0[keep]


def fraction_of_native_contacts(frames, reference: np.ndarray) -> np.ndarray:
    """Q of every frame (..., 10, 3) in Å against ``reference``: see the module docstring."""
    x = torch.as_tensor(np.asarray(frames, dtype=np.float64).reshape(-1, *np.shape(frames)[-2:]))
    return native_contacts_q(x, reference).numpy()


def native_contacts_q(x: torch.Tensor, reference: np.ndarray | None = None) -> torch.Tensor:
    """Q of frames (n, 10, 3) as a differentiable torch function (default reference: the folded one)."""
    i, j, r0 = native_contacts(folded_reference() if reference is None else reference)
    r = torch.linalg.vector_norm(x[:, i] - x[:, j], dim=-1)
    return torch.sigmoid(-Q_BETA * (r - Q_LAMBDA * torch.as_tensor(r0, dtype=x.dtype))).mean(dim=1)


def tica_features(frames) -> np.ndarray:
    """(n, 45 + 14): every Cα pair distance (Å, i < j) and cos, sin of the 7 consecutive Cα dihedrals."""
    x = np.asarray(frames, dtype=np.float64).reshape(-1, *np.shape(frames)[-2:])
    i, j = np.triu_indices(x.shape[1], k=1)
    distances = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
    with torch.no_grad():
        phi = dihedral_angles(torch.as_tensor(x), chain_indices(x.shape[1], 4)).numpy()
    return np.concatenate([distances, np.cos(phi), np.sin(phi)], axis=1)


@lru_cache(maxsize=None)
def tica_model(data_dir: Path = DATA_DIR) -> dict:
    """The saved TICA model (mean, coefficients, lag), verified against ``data/registry.json``."""
    entry = read_json(data_dir / "registry.json")["cln025-tica"]
    d = np.load(verified(data_dir / entry["file"], entry["sha256"], "data file", "rebuild it with `opforce data tica cln025`"))
    return {k: d[k] for k in d.files}


def tica_projection(frames, model: dict | None = None) -> np.ndarray:
    """(n, 2): TIC1 and TIC2 of frames (..., 10, 3), (features − mean) · coefficients."""
    model = tica_model() if model is None else model
    return (tica_features(frames) - model["mean"]) @ model["coefficients"]


def _tica_edges(values, _n_bins) -> list[np.ndarray]:
    lo, hi = values.min(axis=0), values.max(axis=0)
    pad = 0.1 * (hi - lo)
    return [np.linspace(lo[k] - pad[k], hi[k] + pad[k], 61) for k in range(2)]


def rmsd_to_folded(frames) -> np.ndarray:
    x = np.asarray(frames, dtype=np.float64).reshape(-1, *np.shape(frames)[-2:])
    return rmsd(x, folded_reference())


RMSD = Observable("rmsd folded", rmsd_to_folded, lambda v, _: [np.linspace(0.0, 12.0, 121)])
Q = Observable("native contacts Q", lambda frames: fraction_of_native_contacts(frames, folded_reference()),
               lambda v, _: [np.linspace(0.0, 1.0, 51)])
TICA = Observable("tica", tica_projection, _tica_edges)


def states(frames) -> dict[str, np.ndarray]:
    """{"folded": RMSD ≤ 1 Å, "unfolded": the rest} for frames (n, 10, 3): the folded fraction is the first."""
    folded = rmsd_to_folded(frames) <= FOLDED_BELOW
    return {"folded": folded, "unfolded": ~folded}


def folding_transitions(trajectory) -> dict:
    """Foldings and unfoldings of a CG simulation (saved frames, replicas, 10, 3), counted per replica
    between the core sets (≤ 1 Å folded, ≥ 3 Å unfolded, as the data's report counts them), with the
    replicas folded at the first saved frame, those that fold or unfold at least once, and the folded
    fraction in each half of the run: populations a model measured rather than inherited from its starts show events in
    every direction and agree between the halves."""
    x = np.asarray(trajectory)
    if x.ndim != 4 or x.shape[-2:] != (len(BEAD_NAMES), 3):
        raise ValueError(f"a trajectory of shape (frames, replicas, {len(BEAD_NAMES)}, 3) is needed, got {x.shape}")
    d = rmsd_to_folded(x.reshape(-1, len(BEAD_NAMES), 3)).reshape(x.shape[:2])
    events = [count_transitions(d[:, r] <= FOLDED_BELOW, d[:, r] >= UNFOLDED_ABOVE) for r in range(x.shape[1])]
    half = len(d) // 2
    return {"replicas": int(x.shape[1]), "folded at first frame": int((d[0] <= FOLDED_BELOW).sum()),
            "foldings": int(sum(e[1] for e in events)), "unfoldings": int(sum(e[0] for e in events)),
            "replicas folding": int(sum(e[1] > 0 for e in events)),
            "replicas unfolding": int(sum(e[0] > 0 for e in events)),
            "folded % first half": float(100 * (d[:half] <= FOLDED_BELOW).mean()),
            "folded % second half": float(100 * (d[half:] <= FOLDED_BELOW).mean())}


SYSTEM = CGSystem(name="cln025", bead_names=BEAD_NAMES,
                  observables=(*chain_observables(len(BEAD_NAMES)), *(pair_distance(i, j) for i, j in PAIRS), RMSD, Q,
                               TICA),
                  states=states, build_command="opforce data build cln025 data/runs/cln025_340K_*",
                  bead_masses=tuple(RESIDUE_MASSES[name] for name in BEAD_NAMES))
