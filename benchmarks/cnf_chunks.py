"""CNF labels per second against the chunk size (frames per dopri5 solve), on this machine.

For the registered chapter-2 CNF (5 beads, σ = 0.1 Å; alanine-dipeptide frames) and a chapter-3-size EGNN
(hidden 32 × 3 layers, 10 beads, untrained; chignolin frames), the same frames and noise draws are labelled
with every chunk size in :data:`CHUNKS` (each job in a fresh process, one torch thread, float32, score
method at rtol = atol = 1e-5). The sweep runs twice in alternating order, so a change in the machine's load
does not favour one end; each chunk's labels/s is the better of its two runs. Records labels/s, the
solver's evaluations per frame (a larger chunk shares one step size, so a stiff frame makes every frame
of its chunk take its steps) and the speed of each chunk relative to the largest.

Writes ``benchmarks/results/cnf_chunks.json``. Run with ``make bench-cnf-chunks``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from cnf_labels import cpu_model, in_subprocess  # this folder's CNF benchmark: the same machine line and job runner

OUT = Path(__file__).resolve().parent / "results" / "cnf_chunks.json"
CASES = {"trained chapter-2 CNF, 5 beads": (5, 256), "chapter-3-size EGNN, 10 beads": (10, 96)}
CHUNKS = (8, 16, 32, 64, 256)
NOISE_STD = 0.1  # Å, the trained CNF's


def run(job: dict) -> dict:
    from opforce_tutorial import pretrained
    from opforce_tutorial.data.dataset import load_dataset
    from opforce_tutorial.kernels.cnf import CNFDensity, EGNNConfig, EGNNVectorField

    torch.set_num_threads(1)
    beads, n = job["beads"], job["frames"]
    if beads == 5:
        field = pretrained.load("ala2-cnf-0.1")[0]
    else:
        torch.manual_seed(0)
        field = EGNNVectorField(EGNNConfig(bead_types=list(range(beads)), hidden=32, n_layers=3))
    field = field.float().eval()
    pos = load_dataset("ala2" if beads == 5 else "cln025").positions
    x = torch.as_tensor(pos[np.sort(np.random.default_rng(0).choice(len(pos), n, replace=False))])
    gen = torch.Generator().manual_seed(1)
    c = x + NOISE_STD * torch.randn(x.shape, generator=gen)
    z = c + NOISE_STD * torch.randn(x.shape, generator=gen)
    density = CNFDensity(field, NOISE_STD, chunk_size=min(job["chunk"], n))
    t0 = time.perf_counter()
    density.solve(z - z.mean(1, keepdim=True), c - c.mean(1, keepdim=True))
    wall = time.perf_counter() - t0
    return {"labels_per_s": n / wall, "wall_s": wall,  # the evaluations of each frame's chunk, averaged over frames
            "evaluations_per_frame": float(density.last_costs["evaluations"].float().mean()),
            "chunk": density.chunk_size, "failed_chunks": density.failed_chunks}


def main():
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}", "torch": torch.__version__,
              "torch_threads": 1, "date": time.strftime("%Y-%m-%d"), "load_average_at_start": os.getloadavg()[0],
              "cases": {}}
    for name, (beads, n) in CASES.items():
        runs = {chunk: [] for chunk in CHUNKS}
        for order in (CHUNKS, CHUNKS[::-1]):
            for chunk in order:
                runs[chunk].append(in_subprocess({"beads": beads, "frames": n, "chunk": chunk}, __file__))
                print(name, chunk, runs[chunk][-1], flush=True)
        best = {chunk: max(r, key=lambda r: r["labels_per_s"]) for chunk, r in runs.items()}
        largest = best[CHUNKS[-1]]["labels_per_s"]
        result["cases"][name] = {"frames": n, "chunks": {
            str(chunk): {**b, "labels_per_s_runs": [r["labels_per_s"] for r in runs[chunk]],
                         "speed_vs_largest_chunk": b["labels_per_s"] / largest} for chunk, b in best.items()}}
    result["load_average_at_end"] = os.getloadavg()[0]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        print(json.dumps(run(json.loads(sys.argv[2]))))
    else:
        main()
