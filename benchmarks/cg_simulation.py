"""Benchmark CG simulation throughput: BAOAB steps/s and replica-steps/s of prior + SchNet models.

5-bead (alanine dipeptide) and 10-bead (chignolin-sized) chains at the chapter's network size, for
several numbers of replicas. Writes ``benchmarks/results/cg_simulation.json``; run with ``make bench-cg``.
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

OUT = Path(__file__).resolve().parent / "results" / "cg_simulation.json"


def chain_frames(n_beads, n_frames=2000, seed=0):
    """Chains of 3.8 Å bonds whose directions keep a forward component (to fit a prior and start replicas)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n_frames, n_beads, 3)) + np.array([1.5, 0.0, 0.0])
    return np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=1).astype(np.float32)


def main(device="cuda" if torch.cuda.is_available() else "cpu", n_steps=500):
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": device, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
              "model": "prior + SchNet (hidden 64, 2 interactions, 32 RBF), BAOAB, float32", "systems": {}}
    for n_beads in (5, 10):
        x = chain_frames(n_beads)
        prior, _ = fit_priors(x, kbt=0.6)
        torch.manual_seed(0)
        model = CGModel(prior, SchNetEnergy(SchNetConfig(bead_types=list(range(n_beads)), cutoff=12.0))).float().to(device)
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
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
