"""The molecular systems of the book: structures built without downloads, force fields, CG maps.

Alanine dipeptide: openmmtools' shipped ``alanine-dipeptide.pdb`` (22 atoms), Amber ff14SB
(``amber14-all.xml``) with the GBn2 implicit solvent (``implicit/gbn2.xml``), the combination Amber's
developers recommend for peptides in GB; no cutoff; bonds to hydrogen constrained; hydrogen mass
repartitioned to 3 amu so that a 4 fs step is stable. CG map: the 5 backbone heavy atoms
C(ACE) N CA C N(NME).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import openmm as mm
import openmm.app as app
import openmm.unit as u

from .forcemap import ForceMap


@dataclass
class MolecularSystem:
    name: str
    topology: app.Topology
    positions: list
    system: mm.System
    bead_atoms: list[int]
    bead_names: list[str]
    description: str

    @property
    def force_map(self) -> ForceMap:
        return ForceMap.from_openmm(self.system, self.bead_atoms)


def _openmmtools_file(*parts: str) -> str:
    with contextlib.redirect_stdout(io.StringIO()):  # openmmtools prints a pymbar banner on import
        import openmmtools
    path = os.path.join(os.path.dirname(openmmtools.__file__), "data", *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install openmmtools (pip install openmmtools)")
    return path


def alanine_dipeptide() -> MolecularSystem:
    pdb = app.PDBFile(_openmmtools_file("alanine-dipeptide-gbsa", "alanine-dipeptide.pdb"))
    ff = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
                             hydrogenMass=3 * u.amu)
    want = [("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N")]
    index = {(a.residue.name, a.name): a.index for a in pdb.topology.atoms()}
    beads = [index[w] for w in want]
    return MolecularSystem("ala2", pdb.topology, pdb.positions, system, beads, ["C", "N", "CA", "C", "N"],
                           "alanine dipeptide, amber14 (ff14SB) + GBn2, HBonds constraints, HMR 3 amu")


SYSTEMS = {"ala2": alanine_dipeptide}
