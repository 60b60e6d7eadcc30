"""Does the prior alone keep a chain where its data are? Prior-only CG simulations of each study's system.

For each system (chapter 2's alanine dipeptide, chapter 3's chignolin) the prior is fitted to the training
frames with the repulsion on the pairs |i − j| ≥ 3 (the earlier prior) and ≥ 2 (the 1-3 pairs too), and
simulated alone (32 replicas × 10 000 steps of 2 fs, BAOAB, the study's temperature and masses). Reported:
the % of frames with a bead angle more than 5° below the data's smallest, with one below 60°, and with a
non-bonded pair closer than the data's closest. Results go to ``benchmarks/results/prior_walls.json``.
``OMP_NUM_THREADS=1 python benchmarks/prior_walls.py``
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from opforce_tutorial.cg import fit_priors
from opforce_tutorial.cg.pipeline import CGRunSettings, simulate_cg
from opforce_tutorial.chapters import ala2, cln025
from opforce_tutorial.geometry import bond_angles, bond_lengths, chain_indices
from opforce_tutorial.storage import atomic_write_json
from opforce_tutorial.units import kbt as thermal_energy

OUT = Path(__file__).resolve().parent / "results" / "prior_walls.json"
RUN = CGRunSettings(n_replicas=32, n_steps=10_000, save_every=50, burn_in=1000, seed=0)


def angles_deg(x: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return np.degrees(bond_angles(x, chain_indices(x.shape[-2], 3)).numpy())


def closest_non_bonded(x: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    i, j = torch.triu_indices(x.shape[-2], x.shape[-2], offset=2)
    return bond_lengths(x, torch.stack([i, j], 1)).min(-1).values.numpy()


def main() -> None:
    torch.set_num_threads(1)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 torch thread",
               "run": f"{RUN.n_replicas} replicas x {RUN.n_steps} steps of {RUN.dt * 1000:g} fs", "systems": {}}
    for study in (ala2.STUDY, cln025.STUDY):
        ds = study.training_frames()
        kbt = thermal_energy(ds.temperature)
        data_angles, data_closest = angles_deg(ds.positions), closest_non_bonded(ds.positions[::5]).min()
        rows = {}
        for separation in (3, 2):
            t0 = time.perf_counter()
            prior = fit_priors(ds.positions, kbt, repulsion_min_separation=separation)[0]
            traj = simulate_cg(prior, ds.positions, kbt, ds.bead_masses, RUN, progress=False)
            a = angles_deg(traj)
            rows[f"repulsion |i-j| >= {separation}"] = {
                "% frames, an angle > 5 deg below the data's smallest": 100 * float((a < data_angles.min(0) - 5).any(-1).mean()),
                "% frames, an angle < 60 deg": 100 * float((a < 60).any(-1).mean()),
                "% frames, a non-bonded pair closer than the data's closest": 100 * float((closest_non_bonded(traj) < data_closest).mean()),
                "wall_s": round(time.perf_counter() - t0, 1)}
        results["systems"][study.name] = {"data's smallest angle (deg)": float(data_angles.min()),
                                          "data's closest non-bonded pair (A)": float(data_closest), **rows}
        print(json.dumps({study.name: results["systems"][study.name]}, indent=1), flush=True)
    atomic_write_json(OUT, results)


if __name__ == "__main__":
    main()
