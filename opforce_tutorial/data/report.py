"""Sampling reports for the reference runs: how much data, which basins, how often visited."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..evaluation import BASINS, block_mean
from ..geometry import ramachandran

def count_visits(inside_core: np.ndarray, outside_core: np.ndarray) -> int:
    """Number of separate entries into a state, with hysteresis between two core regions.

    A visit starts when a frame is in the state's core after the last frame in a core was in the
    other core (or at the start of the series); recrossings of the boundary in between do not count.
    """
    visits, state = 0, None
    for a, b in zip(inside_core, outside_core):
        if a and state != "in":
            visits += 1
            state = "in"
        elif b:
            state = "out"
    return visits


def ala2_report(run_dirs: list[str | Path], n_blocks: int = 10) -> dict:
    """Frames, ns, basin populations with block errors, and αL visits of alanine dipeptide runs."""
    report = {"runs": {}}
    all_phi, all_psi = [], []
    for run in sorted(Path(r) for r in run_dirs):
        cfg = json.loads((run / "run.json").read_text())
        chunks = sorted(run.glob("chunk_*.npz"))
        if not chunks:
            raise FileNotFoundError(f"{run} has no frames yet (no chunk_*.npz; the first is written after "
                                    f"{cfg['chunk_frames']} frames)")
        x = np.concatenate([np.load(c)["cg_positions"] for c in chunks])
        phi, psi = ramachandran(x)
        report["runs"][run.name] = {
            "frames": len(x),
            "ns": len(x) * cfg["exchange_every_ps"] / 1000.0,
            "temperature_K": cfg["temperatures"][0],
            "alphaL_visits": count_visits(phi > 20, phi < -20),
        }
        all_phi.append(phi)
        all_psi.append(psi)
    phi, psi = np.concatenate(all_phi), np.concatenate(all_psi)
    report["total_ns"] = sum(r["ns"] for r in report["runs"].values())
    report["alphaL_visits"] = sum(r["alphaL_visits"] for r in report["runs"].values())
    report["populations"] = {name: dict(zip(("mean", "block_error"), block_mean(f(phi, psi), n_blocks)))
                             for name, f in BASINS.items()}
    return report
