"""Chignolin (CLN025) at the CG level: 10 Cα beads, one per residue, and the observables it owns."""

from __future__ import annotations

from ..observables import chain_observables
from .base import CGSystem

BEAD_NAMES = ("TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "TYR")

SYSTEM = CGSystem(name="cln025", bead_names=BEAD_NAMES, observables=tuple(chain_observables(len(BEAD_NAMES))),
                  build_command="opforce data build cln025 data/runs/cln025_340K_*")
