"""Benchmark CG simulation throughput: BAOAB steps/s and replica-steps/s of prior + SchNet models.

5-bead (alanine dipeptide) and 10-bead (chignolin Cα) models at the chapter's network size, with priors
fitted to the project's own frames, for several numbers of replicas. Writes ``benchmarks/results/cg_simulation.json``; run with ``make bench-cg``.
"""

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from opforce_tutorial.cg import CGModel, SchNetConfig, SchNetEnergy, fit_priors
from opforce_tutorial.simulation import simulate_langevin

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "cg_simulation.json"


def frames(n_beads):
    """Real CG frames: the shipped alanine dipeptide set (5 beads) or the chignolin run's Cα frames (10 beads)."""
    if n_beads == 5:
        from opforce_tutorial.data.dataset import load_dataset

        return load_dataset("ala2").positions
    chunks = sorted((ROOT / "data" / "runs").glob("cln025_*/chunk_*.npz"))
    return np.concatenate([np.load(c)["cg_positions"] for c in chunks])


def main(device="cuda" if torch.cuda.is_available() else "cpu", n_steps=500):
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": device, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
              "model": "prior + SchNet (hidden 64, 2 interactions, 32 RBF), BAOAB, float32", "systems": {}}
    for n_beads in (5, 10):
        x = frames(n_beads)
        prior, _ = fit_priors(x, kbt=0.6)
        torch.manual_seed(0)
        net = SchNetEnergy(SchNetConfig(bead_types=list(range(n_beads)), cutoff=12.0))
        torch.nn.init.zeros_(net.readout[-1].weight)  # an untrained network adds no force (same cost): stable runs
        model = CGModel(prior, net).float().to(device)
        rows = {}
        for n_rep in (1, 16, 64, 256):
            x0 = torch.as_tensor(x[:n_rep], device=device)
            run = lambda: simulate_langevin(model.forces, x0, masses=12.0, kbt=0.6, dt=0.002, friction=1.0,  # noqa: E731
                                            n_steps=n_steps, save_every=n_steps, progress=False)
            run()  # warm-up
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            if device != "cpu":
                torch.cuda.synchronize()
            steps_per_s = n_steps / (time.perf_counter() - t0)
            rows[f"{n_rep} replicas"] = {"steps/s": round(steps_per_s, 1), "replica-steps/s": round(steps_per_s * n_rep)}
        result["systems"][f"{n_beads} beads"] = rows
        print(n_beads, json.dumps(rows), flush=True)
    out = OUT if device == "cpu" else OUT.with_name(f"{OUT.stem}_{device}.json")  # CPU and GPU results side by side
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
