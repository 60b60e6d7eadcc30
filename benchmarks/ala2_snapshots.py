"""How far the last steps of one force-matching fit move chapter 2's basin balance.

Takes force-matching checkpoints of chapter 2's reference-forces recipe (``opforce pretrain`` keeps them in
``models/.work/<run>/cg.ckpt``, ``cg.ckpt.member<m>`` for an ensemble, until the run finishes) and simulates,
for each, two snapshots of the same fit: the weights of its best validation step (what the run returns) and
those of its last step. Both run the chapter's simulation (64 replicas × 100 ps, same starts, same noise), so
what differs between them is the weights alone. Records the state populations and the Ramachandran JS in
``benchmarks/results/ala2_snapshots.json`` (one atomic update per checkpoint; recorded ones are skipped).

The ensemble run's member checkpoints are in the project's history, e.g.::

    git show d7814f6:models/in_progress/ala2-cg-reference-ensemble4/cg.ckpt > member0.ckpt
    OMP_NUM_THREADS=1 python benchmarks/ala2_snapshots.py member0.ckpt
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

from opforce_tutorial.cg.network import CGModel, SchNetEnergy
from opforce_tutorial.cg.pipeline import simulate_cg
from opforce_tutorial.cg.priors import fit_priors
from opforce_tutorial.chapters import ala2
from opforce_tutorial.storage import read_json, sha256, update_json
from opforce_tutorial.units import kbt as thermal_energy

OUT = Path(__file__).resolve().parent / "results" / "ala2_snapshots.json"
MACHINE = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 torch thread"


def snapshot_scores(checkpoint: Path) -> dict:
    """Populations (%) and Ramachandran JS of the best-validation and the last-step weights of ``checkpoint``."""
    ds = ala2.training_frames()
    kbt = thermal_energy(ds.temperature)
    y, _, _ = ala2.labelled_set("reference", None, ds, progress=False)
    s = ala2.CG_SETTINGS
    prior, _ = fit_priors(y, kbt, repulsion_min_separation=s.repulsion_min_separation)
    config = s.schnet_config(ala2.BEAD_TYPES)
    state = torch.load(checkpoint, weights_only=True)
    out = {}
    for which, weights, step in (("best step", state["best_state"], state["history"]["best_step"]),
                                 ("last step", state["model"], state["step"])):
        net = SchNetEnergy(config)
        net.load_state_dict(weights)
        t0 = time.perf_counter()
        scores = ala2.score(simulate_cg(CGModel(prior, net.eval()).eval(), ds.positions, kbt, ds.bead_masses, s,
                                        progress=False))
        out[which] = {"step": step, **{f"{basin} %": 100 * p["mean"] for basin, p in scores["populations"].items()},
                      "ramachandran_js": scores["js"]["ramachandran"]["js"],
                      "simulation_s": round(time.perf_counter() - t0, 1)}
        print(checkpoint.name, which, out[which], flush=True)
    return out


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    for path in map(Path, paths):
        key = sha256(path)
        if key in (read_json(OUT) if OUT.exists() else {}).get("checkpoints", {}):
            print(f"{path}: recorded, skipped", flush=True)
            continue
        result = {"file": path.name, **snapshot_scores(path), "date": time.strftime("%Y-%m-%d %H:%M")}

        def add(results, key=key, result=result):
            results.setdefault("machine", MACHINE)
            results.setdefault("checkpoints", {})[key] = result

        OUT.parent.mkdir(parents=True, exist_ok=True)
        update_json(OUT, add, sort_keys=False)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/ala2_snapshots.py CHECKPOINT [CHECKPOINT ...]")
    main(sys.argv[1:])
