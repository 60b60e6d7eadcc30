"""Alanine dipeptide at the CG level: its 5-bead backbone map and the observables it owns.

The map keeps the backbone heavy atoms C(ACE) N CA C N(NME) (:mod:`opforce_tutorial.data.molecules`
builds the atomistic system). Besides its chain observables (4 bonds, 3 angles, 2 dihedrals), the
molecule owns its Ramachandran plane, φ = beads 0-1-2-3 and ψ = beads 1-2-3-4 on a 60 × 60 grid over
(−180°, 180°]², and its three basins on it.
"""

from __future__ import annotations

import numpy as np

from ..observables import chain_observables, dihedral_pair
from .base import CGSystem

BEAD_NAMES = ("C", "N", "CA", "C", "N")
PHI, PSI = (0, 1, 2, 3), (1, 2, 3, 4)
RAMACHANDRAN = dihedral_pair("ramachandran", PHI, PSI, n_bins=60)

#: Alanine dipeptide basins on (φ, ψ) in degrees.
BASINS = {
    "αL (φ > 0)": lambda phi, psi: phi > 0,
    "αR": lambda phi, psi: (phi <= 0) & (psi > -120) & (psi < 50),
    "β / PII": lambda phi, psi: (phi <= 0) & ((psi >= 50) | (psi <= -120)),
}


def ramachandran(frames) -> tuple[np.ndarray, np.ndarray]:
    """(φ, ψ) in degrees of frames (..., 5, 3), flattened over the leading axes."""
    phi, psi = RAMACHANDRAN.values(frames).T
    return phi, psi


def basins(frames) -> dict[str, np.ndarray]:
    """{basin: (n,) bool} for frames (n, 5, 3): the states of :func:`~opforce_tutorial.evaluation.state_populations`."""
    phi, psi = ramachandran(frames)
    return {name: inside(phi, psi) for name, inside in BASINS.items()}


SYSTEM = CGSystem(name="ala2", bead_names=BEAD_NAMES,
                  observables=(*chain_observables(len(BEAD_NAMES)), RAMACHANDRAN), states=basins,
                  build_command="opforce data build ala2 data/runs/ala2_*")
