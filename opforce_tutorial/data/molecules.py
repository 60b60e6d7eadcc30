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
from collections.abc import Callable
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
    create_system: Callable[[app.Topology], mm.System]

    @property
    def force_map(self) -> ForceMap:
        return ForceMap.from_openmm(self.system, self.bead_atoms)


def _openmmtools_file(*parts: str) -> str:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import openmmtools  # prints a pymbar banner and warnings on import
    path = os.path.join(os.path.dirname(openmmtools.__file__), "data", *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install openmmtools (pip install openmmtools)")
    return path


def alanine_dipeptide() -> MolecularSystem:
    pdb = app.PDBFile(_openmmtools_file("alanine-dipeptide-gbsa", "alanine-dipeptide.pdb"))
    system = _ala2_system(pdb.topology)
    want = [("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N")]
    index = {(a.residue.name, a.name): a.index for a in pdb.topology.atoms()}
    beads = [index[w] for w in want]
    return MolecularSystem("ala2", pdb.topology, pdb.positions, system, beads, ["C", "N", "CA", "C", "N"],
                           "alanine dipeptide, amber14 (ff14SB) + GBn2, HBonds constraints, HMR 3 amu", _ala2_system)


def _ala2_system(topology: app.Topology) -> mm.System:
    """ff14SB + GBn2 for any topology of alanine dipeptide molecules (one, or several copies)."""
    ff = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    return ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, hydrogenMass=3 * u.amu)


SYSTEMS = {"ala2": alanine_dipeptide}


CLN025_SEQUENCE = "YYDPETGTWY"


def _extended_cln025_pdb() -> app.PDBFile:
    """CLN025 as an extended chain (φ −120°, ψ 130°; Pro φ −60°) built by PeptideBuilder, no hydrogens."""
    from Bio.PDB import PDBIO
    from PeptideBuilder import Geometry, add_terminal_OXT, make_structure_from_geos

    geos = []
    for aa in CLN025_SEQUENCE:
        g = Geometry.geometry(aa)
        g.phi, g.psi_im1 = (-60.0 if aa == "P" else -120.0), 130.0
        geos.append(g)
    structure = add_terminal_OXT(make_structure_from_geos(geos))
    out = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(out)
    return app.PDBFile(io.StringIO(out.getvalue()))


def native_obc2(system: mm.System) -> mm.System:
    """Replace the app's OBC2 ``CustomGBForce`` by OpenMM's native ``GBSAOBCForce`` (same model, ~4× faster).

    The custom force's per-particle parameters are (charge, offset radius ``or``, scaled offset radius
    ``sr``) with offset 0.009 nm, so the native radius is ``or + 0.009`` and the scale ``sr/or``; the
    dielectrics (78.5, 1) and the ACE surface term (2.25936 kJ/mol/nm², probe 0.14 nm) are the native
    force's defaults. Tests check that both give the same energy.
    """
    (index, custom), = [(i, f) for i, f in enumerate(system.getForces()) if isinstance(f, mm.CustomGBForce)]
    native = mm.GBSAOBCForce()
    native.setNonbondedMethod(mm.GBSAOBCForce.NoCutoff)
    native.setSolventDielectric(78.5)
    native.setSoluteDielectric(1.0)
    for i in range(custom.getNumParticles()):
        charge, offset_radius, scaled = custom.getParticleParameters(i)
        native.addParticle(charge, offset_radius + 0.009, scaled / offset_radius)
    native.setForceGroup(custom.getForceGroup())
    system.removeForce(index)
    system.addForce(native)
    return system


def chignolin() -> MolecularSystem:
    """CLN025 (YYDPETGTWY), 166 atoms with hydrogens at pH 7 (net charge −2), extended start.

    Amber ff14SB + OBC2 (Amber igb=5) as OpenMM's native GBSAOBCForce, no cutoff, HBonds constraints,
    HMR 3 amu. CG map: the 10 Cα.
    """
    pdb = _extended_cln025_pdb()
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(app.ForceField("amber14-all.xml", "implicit/obc2.xml"), pH=7.0)
    system = _cln025_system(modeller.topology)
    beads = [a.index for a in modeller.topology.atoms() if a.name == "CA"]
    names = [a.residue.name for a in modeller.topology.atoms() if a.name == "CA"]
    return MolecularSystem("cln025", modeller.topology, modeller.positions, system, beads, names,
                           "CLN025, amber14 (ff14SB) + OBC2 (native GBSAOBCForce), HBonds constraints, HMR 3 amu",
                           _cln025_system)


def _cln025_system(topology: app.Topology) -> mm.System:
    """ff14SB + OBC2 (native force) for any topology of CLN025 molecules (one, or several copies)."""
    ff = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, hydrogenMass=3 * u.amu)
    return native_obc2(system)


SYSTEMS["cln025"] = chignolin
