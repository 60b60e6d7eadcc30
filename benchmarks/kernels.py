"""Benchmark the molecular kernels: exact-divergence speed-up over the per-dimension loop, and label rates.

Also labels per second of every kernel and training steps per second of both flows, on a 5-bead and a
10-bead system. Writes ``benchmarks/results/kernels.json``. Run with ``make bench-kernels``.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

from opforce_tutorial.kernels import NoiseKernel
from opforce_tutorial.kernels import ReverseNoiseKernel
from opforce_tutorial.kernels.cnf import CNFDensity, CNFTraining, EGNNConfig, EGNNVectorField, _flow_matching_batch
from opforce_tutorial.kernels.divergence import exact_divergence, loop_divergence
from opforce_tutorial.kernels.coupling import (CouplingFlow, CouplingFlowConfig, CouplingTraining,
                                               _training_batch)

OUT = Path(__file__).resolve().parent / "results" / "kernels.json"


def timed(fn, repeat=3):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def training_steps_per_s(step, n=3):
    return 1.0 / timed(step, repeat=n)


def main(device="cuda" if torch.cuda.is_available() else "cpu"):
    torch.manual_seed(0)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": device, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
              "note": "timings are the best of 3 (CNF labels: 1) after a warm-up; seed-size models", "systems": {}}
    for n_beads in (5, 10):
        types = list(range(n_beads))
        x = torch.randn(16, n_beads, 3, device=device) * 3.8
        x = x - x.mean(1, keepdim=True)
        field = EGNNVectorField(EGNNConfig(bead_types=types)).to(device)  # hidden 64, 5 layers
        t_exact = timed(lambda: exact_divergence(field, 0.5, x))
        t_loop = timed(lambda: loop_divergence(field, 0.5, x))
        cnf = ReverseNoiseKernel(CNFDensity(field, prior_std=0.05, chunk_size=4), 0.05, 0.6, mean_free=True)  # dopri5, rtol = atol = 1e-5 Å
        t_cnf = timed(lambda: cnf.sample_with_forces(x[:4]), repeat=1)
        cnf_rk4 = ReverseNoiseKernel(CNFDensity(field, prior_std=0.05, solver="rk4", n_steps=10, chunk_size=4), 0.05, 0.6,
                                     mean_free=True)
        t_cnf_rk4 = timed(lambda: cnf_rk4.sample_with_forces(x[:4]), repeat=1)
        flow = CouplingFlow(CouplingFlowConfig(bead_types=types)).to(device)  # seed size: 8 × 3, d 128
        cf = ReverseNoiseKernel(flow, 0.05, 0.6, mean_free=True)
        t_cf = timed(lambda: cf.sample_with_forces(x))
        noise = NoiseKernel(0.05, kbt=0.6, mean_free=True)
        big = x.repeat(64, 1, 1)
        t_noise = timed(lambda: noise.sample_with_forces(big))

        batch = 64
        data = x.repeat(8, 1, 1).cpu()
        opt_cf = torch.optim.Adam(flow.parameters(), lr=5e-4)
        cs = CouplingTraining(noise_std=0.05)
        gen = torch.Generator().manual_seed(0)

        def coupling_step():
            xb, v, c = _training_batch(data[:batch], cs, gen, device)
            loss = -flow.log_prob(xb, c, v).mean()
            opt_cf.zero_grad()
            loss.backward()
            opt_cf.step()

        opt_cnf = torch.optim.Adam(field.parameters(), lr=5e-4)
        ns = CNFTraining(noise_std=0.05, prior_std=0.05)

        def cnf_step():
            t, xt, target = _flow_matching_batch(data[:batch], ns, gen, device)
            loss = ((field(t, xt) - target) ** 2).mean()
            opt_cnf.zero_grad()
            loss.backward()
            opt_cnf.step()

        result["systems"][f"{n_beads} beads"] = {
            "exact divergence, batch 16 (s)": round(t_exact, 4),
            "per-dimension loop, batch 16 (s)": round(t_loop, 4),
            "exact-divergence speed-up": round(t_loop / t_exact, 2),
            "CNF labels/s (dopri5, rtol=atol=1e-5, batch 4)": round(4 / t_cnf, 2),
            # two calls (warm-up + timed), each one forward and one backward solve
            "CNF dopri5 accepted steps per ODE solve": round(cnf.flow.stats.accepted / 4, 1),
            "CNF labels/s (RK4, 10 steps, batch 4)": round(4 / t_cnf_rk4, 2),
            "coupling-flow labels/s (8 couplings x 3 transformer layers, batch 16)": round(16 / t_cf, 1),
            "noise-kernel labels/s (batch 1024)": round(1024 / t_noise),
            f"coupling-flow training steps/s (batch {batch})": round(training_steps_per_s(coupling_step), 2),
            f"CNF flow-matching training steps/s (batch {batch})": round(training_steps_per_s(cnf_step), 2),
        }
        print(n_beads, json.dumps(result["systems"][f"{n_beads} beads"], indent=2), flush=True)
    out = OUT if device == "cpu" else OUT.with_name(f"{OUT.stem}_{device}.json")  # CPU and GPU results side by side
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
