"""Linear CG maps for positions and forces, valid for systems with constrained bonds.

Positions: a bead sits on one atom (R_I = r_{a(I)}), e.g. the backbone heavy atoms of alanine
dipeptide or the Cα of chignolin.

Forces: OpenMM's ``getForces()`` returns −∇U *without* constraint forces. With bonds to hydrogen
constrained, the force that keeps a hydrogen at fixed distance from its heavy atom is internal to the
group {heavy atom, its constrained hydrogens}, so it cancels only in the *sum* over that group. A
bead's reference force is therefore F_I = Σ_{a ∈ group(I)} f_a, where group(I) is the bead atom and
every atom connected to it through constraints. A plain slice f_{a(I)} of a constrained system is
not a valid force map (it misses the constraint force, hundreds of kJ/mol/nm on N and Cα).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ForceMap:
    """Bead atoms (one per bead) and, per bead, the atoms whose forces are summed."""

    bead_atoms: list[int]
    groups: list[list[int]]
    n_atoms: int

    @classmethod
    def from_constraints(cls, n_atoms: int, bead_atoms: list[int], constraints: list[tuple[int, int]]) -> "ForceMap":
        """Group each bead atom with every atom reachable from it through constraints."""
        neighbours: dict[int, set[int]] = {}
        for i, j in constraints:
            neighbours.setdefault(i, set()).add(j)
            neighbours.setdefault(j, set()).add(i)
        groups, used = [], set()
        for a in bead_atoms:
            group, todo = {a}, [a]
            while todo:
                for b in neighbours.get(todo.pop(), ()):
                    if b not in group:
                        group.add(b)
                        todo.append(b)
            if used & group:
                raise ValueError(f"bead atom {a}'s constraint group {sorted(group)} overlaps another bead's")
            used |= group
            groups.append(sorted(group))
        return cls(list(bead_atoms), groups, n_atoms)

    @classmethod
    def from_openmm(cls, system, bead_atoms: list[int]) -> "ForceMap":
        cons = [tuple(system.getConstraintParameters(k)[:2]) for k in range(system.getNumConstraints())]
        return cls.from_constraints(system.getNumParticles(), bead_atoms, cons)

    @property
    def matrix(self) -> np.ndarray:
        """The (n_beads, n_atoms) 0/1 force-map matrix M_f, so that F = M_f f."""
        m = np.zeros((len(self.groups), self.n_atoms))
        for i, g in enumerate(self.groups):
            m[i, g] = 1.0
        return m

    def map_positions(self, xyz: np.ndarray) -> np.ndarray:
        """(..., n_atoms, 3) → (..., n_beads, 3)."""
        return xyz[..., self.bead_atoms, :]

    def map_forces(self, forces: np.ndarray) -> np.ndarray:
        """(..., n_atoms, 3) → (..., n_beads, 3): sum over each bead's constraint group."""
        return np.einsum("ba,...ak->...bk", self.matrix, forces)
