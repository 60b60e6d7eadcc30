"""Structures of CG chains: optimal superposition (Kabsch), RMSD, and Cα PDB files (numpy in and out, Å)."""

from __future__ import annotations

import numpy as np

from .storage import atomic_write_text


def rmsd(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cα-RMSD (Å) of every frame of ``x`` (frames, n, 3) to ``ref`` (n, 3) after optimal superposition (Kabsch)."""
    x = x - x.mean(-2, keepdims=True)
    ref = ref - ref.mean(0)
    cov = np.einsum("fni,nj->fij", x, ref)
    s = np.linalg.svd(cov, compute_uv=False)
    s[:, -1] *= np.sign(np.linalg.det(cov))  # no reflections
    msd = ((x**2).sum((1, 2)) + (ref**2).sum() - 2 * s.sum(1)) / len(ref)
    return np.sqrt(np.maximum(msd, 0.0))

def superpose(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` (n, 3) rotated and translated onto ``ref`` (n, 3) (Kabsch, no reflection)."""
    xc, rc = x - x.mean(0), ref - ref.mean(0)
    u, _, vt = np.linalg.svd(xc.T @ rc)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return xc @ rot + ref.mean(0)


def ca_pdb_text(chains: dict[str, np.ndarray], residue_names: list[str]) -> str:
    """PDB text of Cα bead chains (Å): one chain per entry (chain ids A, B, …), one residue per bead,
    with CONECT records along each chain."""
    lines, bonds, serial = [], [], 0
    for chain_id, xyz in zip("ABCDEFGHIJ", chains.values()):
        for i, (name, (x, y, z)) in enumerate(zip(residue_names, xyz), start=1):
            serial += 1
            lines.append(f"ATOM  {serial:5d}  CA  {name:>3s} {chain_id}{i:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C")
            if i > 1:
                bonds.append(f"CONECT{serial - 1:5d}{serial:5d}")
    return "\n".join(lines + bonds + ["END"]) + "\n"


def write_ca_pdb(path, xyz: np.ndarray, residue_names: list[str]) -> None:
    """A PDB file of Cα beads (Å), one residue each, chain A, with CONECT records along the chain."""
    atomic_write_text(path, ca_pdb_text({"A": xyz}, residue_names))


def read_ca_pdb(path) -> np.ndarray:
    """The Cα coordinates (Å) of a PDB file, in file order."""
    return np.array([[float(line[30:38]), float(line[38:46]), float(line[46:54])] for line in open(path)
                     if line.startswith(("ATOM", "HETATM")) and line[12:16].strip() == "CA"])
