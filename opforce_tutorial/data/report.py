"""Sampling reports for the reference runs: how much data, which basins, how often visited.

Rare events are counted between core sets with hysteresis (:func:`opforce_tutorial.analysis.committed_states`):
visits (alanine dipeptide's αL) and transitions (chignolin folding) alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis import count_visits, state_populations
from ..systems.alanine_dipeptide import BASINS, basins, ramachandran


def ala2_report(run_dirs: list[str | Path], n_blocks: int = 10, trajectories: list | None = None) -> dict:
    """ns, αL visits and basin populations (with block errors) of alanine dipeptide runs.

    Each run's trajectories (the target replica of a replica-exchange run, or every copy of a copies
    run) are counted separately, so no visit spans two trajectories. Populations are reported per run
    and over all frames, thinned to a common saving interval as in the shipped dataset; block errors come
    from ``n_blocks`` contiguous blocks of the frames in run and copy order, so a block holds stretches
    of whole trajectories. ``trajectories``: the runs' already loaded trajectories, if at hand.
    """
    from .dataset import load_trajectories, thin_to_common_interval

    report = {"runs": {}}
    trajs = load_trajectories(run_dirs) if trajectories is None else trajectories
    thinned_all = thin_to_common_interval(trajs)
    for traj, thinned in zip(trajs, thinned_all):
        run = traj.source.split("/")[0]
        phi = ramachandran(traj.positions)[0]
        entry = report["runs"].setdefault(run, {"trajectories": 0, "ns": 0.0, "save_interval_ps": traj.save_interval_ps,
                                                "temperature_K": traj.temperature, "alphaL_visits": 0,
                                                "frames": []})
        entry["trajectories"] += 1
        entry["ns"] += len(phi) * traj.save_interval_ps / 1000.0
        entry["alphaL_visits"] += count_visits(phi > 20, phi < -20)  # at full time resolution
        entry["frames"].append(thinned.positions)  # populations: every frame the same span of time
    for entry in report["runs"].values():
        frames = np.concatenate(entry.pop("frames"))
        entry["ns"] = round(entry["ns"], 3)
        entry["populations"] = state_populations(frames, basins, n_blocks)
    report["total_ns"] = round(sum(r["ns"] for r in report["runs"].values()), 3)
    report["alphaL_visits"] = sum(r["alphaL_visits"] for r in report["runs"].values())
    exchange = [t for t in thinned_all if t.replica_exchange] or thinned_all
    report["populations_from"] = sorted({t.source.split("/")[0] for t in exchange})
    report["populations"] = state_populations(np.concatenate([t.positions for t in exchange]), basins, n_blocks)
    return report


def basin_weights(trajs: list) -> np.ndarray | None:
    """Per-frame weights (summing to 1, frames of ``trajs`` in order) that give each Ramachandran basin
    the population it has in the replica-exchange trajectories among ``trajs``; None if there are none.

    Plain MD started from equilibrium frames keeps the equilibrium distribution only on average over
    its starts; 300 K alanine dipeptide in GB almost never enters αL, so a few plain copies represent
    the αL population badly, while the target replica of a replica-exchange run crosses every barrier
    many times. Stratifying by basin, w = π_b / N_b for a frame in basin b (π_b: the replica-exchange
    population of b, N_b: the frames of all trajectories in b), keeps the replica-exchange populations
    and lets every frame, plain or exchanged, describe the distribution within its basin. ``trajs`` must
    share a saving interval (:func:`.dataset.thin_to_common_interval`).
    """
    if not any(t.replica_exchange for t in trajs):
        return None
    phi, psi = ramachandran(np.concatenate([t.positions for t in trajs]))
    exchange = np.concatenate([np.full(len(t.positions), t.replica_exchange) for t in trajs])
    weights = np.zeros(len(phi))
    for in_basin in (f(phi, psi) for f in BASINS.values()):
        if in_basin.any():
            weights[in_basin] = in_basin[exchange].mean() / in_basin.sum()
    return weights / weights.sum()


def write_ala2_dataset(run_dirs: list[str | Path], bead_names: list[str], data_dir: Path | None = None) -> dict:
    """``data/ala2.npz`` from replica-exchange and plain runs, with basin weights and the sampling report
    (ns, αL visits, populations per run and at equilibrium) in its registry entry."""
    from .dataset import DATA_DIR, build_dataset, load_trajectories, thin_to_common_interval

    trajs = load_trajectories(run_dirs)
    report = ala2_report(run_dirs, trajectories=trajs)
    thinned = thin_to_common_interval(trajs)
    weights = basin_weights(thinned)
    summary = {"total_ns": report["total_ns"], "alphaL_visits": report["alphaL_visits"],
               "populations": report["populations"], "populations_from": report["populations_from"],
               "per_run": {run: {k: r[k] for k in ("trajectories", "ns", "save_interval_ps", "alphaL_visits", "populations")}
                           for run, r in report["runs"].items()}}
    if weights is not None:
        summary["weights"] = ("per frame: the basin populations of the replica-exchange runs spread over each "
                              "basin's frames (opforce_tutorial.data.report.basin_weights)")
    return build_dataset("ala2", run_dirs, bead_names, DATA_DIR if data_dir is None else data_dir,
                         weights=weights, provenance=summary, trajectories=thinned)
