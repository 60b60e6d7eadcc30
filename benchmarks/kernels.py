"""Benchmark the molecular kernels: exact-divergence speed-up over the per-dimension loop, and label rates.

Writes ``benchmarks/results/kernels.json``. Run with ``python benchmarks/kernels.py`` (``make bench`` runs
the book benchmark; this one is separate because the molecular kernels are still being built).
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

from opforce_tutorial.kernels.cnf import CNFKernel, EGNNConfig, EGNNVectorField, exact_divergence, loop_divergence
from opforce_tutorial.kernels.coupling import CouplingFlow, CouplingFlowConfig, CouplingFlowKernel

OUT = Path(__file__).resolve().parent / "results" / "kernels.json"


def timed(fn, repeat=3):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(device="cuda" if torch.cuda.is_available() else "cpu"):
    torch.manual_seed(0)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": device, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "systems": {}}
    for n_beads in (5, 10):
        x = torch.randn(16, n_beads, 3, device=device) * 3.8
        x = x - x.mean(1, keepdim=True)
        field = EGNNVectorField(EGNNConfig(bead_types=list(range(n_beads)))).to(device)  # hidden 64, 5 layers
        t_exact = timed(lambda: exact_divergence(field, 0.5, x))
        t_loop = timed(lambda: loop_divergence(field, 0.5, x))
        cnf = CNFKernel(field, noise_std=0.05, prior_std=0.05, kbt=0.6, n_steps=10)
        t_cnf = timed(lambda: cnf.sample_with_forces(x[:4]), repeat=1)
        flow = CouplingFlow(CouplingFlowConfig(bead_types=list(range(n_beads)))).to(device)  # seed size: 8 × 3, d 128
        cf = CouplingFlowKernel(flow, noise_std=0.05, kbt=0.6)
        t_cf = timed(lambda: cf.sample_with_forces(x))
        result["systems"][f"{n_beads} beads"] = {
            "exact divergence, batch 16 (s)": round(t_exact, 4),
            "per-dimension loop, batch 16 (s)": round(t_loop, 4),
            "exact-divergence speed-up": round(t_loop / t_exact, 2),
            "CNF labels/s (RK4, 10 steps, exact divergence, batch 4)": round(4 / t_cnf, 1),
            "coupling-flow labels/s (8 couplings x 3 transformer layers, batch 16)": round(16 / t_cf, 1),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
