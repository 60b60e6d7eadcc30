"""CNF labels: one forward solve of (x, s) ("score") against the inverse solve with autograd ("inverse").

For each model (the registered chapter-2 CNF at 5 beads; the paper's EGNN size, hidden 64 × 5 layers,
untrained, at 5 and 10 beads) and the same frames and noise draws:

* accuracy: labels of each method against a tight-tolerance reference (float64, score method,
  rtol = atol = 1e-8), as the median and largest relative error per label |f − f_ref| / |f_ref|;
  for the trained model the reference is checked against the inverse method at the same tolerance;
* speed: labels/s at float32, one torch thread, each job in a fresh process: the inverse method at
  rtol = atol = 1e-5 (the package default before the score method), the score method at 1e-5 and
  1e-4; the speed-up is that of the fastest score setting whose median and largest errors are both
  no larger than the inverse method's (equal or better accuracy);
* memory: the peak resident memory of that process (``ru_maxrss``), with the score method's chunk of
  64 frames at 10 beads planned from a 2 GB budget.

Writes ``benchmarks/results/cnf_labels.json`` (``cnf_labels_cuda.json`` on a GPU, where the chunks are
planned from the free device memory, the peak is ``torch.cuda.max_memory_allocated``, and 2048 labels
at 5 and 10 beads measure the labels/s of the planned chunks). Run with
``make bench-cnf``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "cnf_labels.json"
NOISE_STD = PRIOR_STD = 0.05  # Å
KBT = 0.6
DATA = {5: "ala2", 10: "cln025"}


def model(name: str, n_beads: int):
    from opforce_tutorial import pretrained
    from opforce_tutorial.kernels.cnf import EGNNConfig, EGNNVectorField

    if name == "trained":
        return pretrained.load("ala2-cnf-0.05")[0]
    torch.manual_seed(0)
    return EGNNVectorField(EGNNConfig(bead_types=list(range(n_beads)), hidden=64, n_layers=5))


def frames(n_beads: int, n: int) -> torch.Tensor:
    from opforce_tutorial.data.dataset import load_dataset

    pos = load_dataset(DATA[n_beads]).positions
    idx = np.random.default_rng(0).choice(len(pos), n, replace=False)
    x = torch.as_tensor(pos[np.sort(idx)], dtype=torch.float64)
    return x - x.mean(dim=1, keepdim=True)


def noised(x: torch.Tensor):
    """(z, c): the kernel's two mean-free draws, made in float64 so every job sees the same ones."""
    gen = torch.Generator().manual_seed(1)

    def mean_free_noise():
        e = torch.randn(x.shape, dtype=torch.float64, generator=gen)
        return e - e.mean(dim=1, keepdim=True)

    c = x + NOISE_STD * mean_free_noise()
    return c + PRIOR_STD * mean_free_noise(), c


def run(job: dict) -> dict:
    """One labelling job in this process: labels, labels/s, solver cost and peak memory."""
    from opforce_tutorial.kernels.cnf import CNFDensity, memory_budget_gb

    torch.set_num_threads(1)
    device = torch.device(job["device"])
    dtype = getattr(torch, job["dtype"])
    field = model(job["model"], job["beads"]).to(device, dtype)
    x = frames(job["beads"], job["frames"]).to(device, dtype)
    budget = job.get("budget_gb") or memory_budget_gb(device)
    density = CNFDensity(field, PRIOR_STD, rtol=job["tol"], atol=job["tol"], method=job["method"],
                         chunk_size=job.get("chunk"), memory_budget_gb=budget)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    y, score = density.solve(*(t.to(device, dtype) for t in noised(x.cpu().double())))
    f = KBT * score
    wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"labels": f.double().cpu().tolist(), "wall_s": wall, "labels_per_s": len(x) / wall,
            "chunk": density.chunk_size, "directions_per_pass": density.group_size,
            "evaluations_per_chunk": density.stats.evaluations / -(-len(x) // density.chunk_size),
            "failed_chunks": density.failed_chunks, "peak_memory_gb": peak / 1e9}


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def in_subprocess(job: dict, script: str = __file__) -> dict:
    """Run ``script --job <job>`` in a fresh process with one OpenMP thread; its last stdout line, as JSON."""
    out = subprocess.run([sys.executable, script, "--job", json.dumps(job)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"job {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def relative_errors(f, ref) -> dict:
    f, ref = np.asarray(f), np.asarray(ref)
    rel = np.linalg.norm((f - ref).reshape(len(f), -1), axis=1) / np.linalg.norm(ref.reshape(len(f), -1), axis=1)
    return {"median": float(np.median(rel)), "max": float(rel.max())}


def main(device="cuda" if torch.cuda.is_available() else "cpu"):
    cases = [("trained", 5, 32), ("paper size", 5, 16), ("paper size", 10, 8)]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}",
              "device": device, "torch": torch.__version__, "torch_threads": 1, "date": time.strftime("%Y-%m-%d"),
              "noise_std_A": NOISE_STD, "prior_std_A": PRIOR_STD, "cases": {}}
    for name, beads, n in cases:
        base = {"model": name, "beads": beads, "frames": n, "device": device}
        ref = in_subprocess({**base, "method": "score", "dtype": "float64", "tol": 1e-8})
        case = {"frames": n, "reference": {k: v for k, v in ref.items() if k != "labels"}}
        if name == "trained":
            inv = in_subprocess({**base, "method": "inverse", "dtype": "float64", "tol": 1e-8, "chunk": 4})
            case["reference vs inverse at the same tolerance"] = relative_errors(inv["labels"], ref["labels"])
        today_chunk = 16 if beads == 5 else 4  # the inverse solve at 10 beads needs ~1.2 GB per frame
        for label, job in (("inverse, 1e-5 (today)", {"method": "inverse", "chunk": today_chunk, "tol": 1e-5}),
                           ("score, 1e-5", {"method": "score", "tol": 1e-5}),
                           ("score, 1e-4", {"method": "score", "tol": 1e-4})):
            res = in_subprocess({**base, **job, "dtype": "float32"})
            case[label] = {**{k: v for k, v in res.items() if k != "labels"},
                           "relative_error": relative_errors(res["labels"], ref["labels"])}
        today = case["inverse, 1e-5 (today)"]
        as_good = [case[k]["labels_per_s"] for k in ("score, 1e-5", "score, 1e-4")
                   if all(case[k]["relative_error"][q] <= today["relative_error"][q] for q in ("median", "max"))]
        case["speed-up at equal or better accuracy"] = max(as_good) / today["labels_per_s"] if as_good else None
        result["cases"][f"{name}, {beads} beads"] = case
        print(json.dumps({f"{name}, {beads} beads": case}, indent=1), flush=True)
    memory = in_subprocess({"model": "paper size", "beads": 10, "frames": 64, "device": device, "method": "score",
                            "dtype": "float32", "tol": 1e-5, "chunk": 64, "budget_gb": 2.0})
    result["score, chunk of 64 at 10 beads, 2 GB budget"] = {k: v for k, v in memory.items() if k != "labels"}
    if device == "cuda":  # chunks planned from the free device memory: how many labels/s a GPU reaches
        for beads in (5, 10):
            big = in_subprocess({"model": "paper size", "beads": beads, "frames": 2048, "device": device,
                                 "method": "score", "dtype": "float32", "tol": 1e-5})
            result[f"score, 2048 labels at {beads} beads, planned chunks"] = {k: v for k, v in big.items()
                                                                                if k != "labels"}
    out = OUT if device == "cpu" else OUT.with_name(f"{OUT.stem}_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        print(json.dumps(run(json.loads(sys.argv[2]))))
    else:
        main()
