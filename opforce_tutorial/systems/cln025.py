"""Chignolin (CLN025) at the CG level: 10 Cα beads, one per residue, and the observables it owns."""

from __future__ import annotations

from ..observables import chain_observables
from .base import CGSystem

BEAD_NAMES = ("TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "TYR")
#: Residue masses (amu, average isotopic composition, residue = amino acid − H₂O): each Cα bead carries
#: its residue. Masses set the CG dynamics' time scale only, not its equilibrium distribution.
RESIDUE_MASSES = {"TYR": 163.18, "ASP": 115.09, "PRO": 97.12, "GLU": 129.12, "THR": 101.10, "GLY": 57.05,
                  "TRP": 186.21}

SYSTEM = CGSystem(name="cln025", bead_names=BEAD_NAMES, observables=tuple(chain_observables(len(BEAD_NAMES))),
                  build_command="opforce data build cln025 data/runs/cln025_340K_*",
                  bead_masses=tuple(RESIDUE_MASSES[name] for name in BEAD_NAMES))
