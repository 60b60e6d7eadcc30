"""Sampling reports for the reference runs: how much data, which basins, how often visited.

Rare-event counting uses core sets with hysteresis: a trajectory is committed to a state from the frame
it enters that state's core until it enters another core; crossing the boundary between cores and
coming back is no transition. :func:`committed_states` is that state machine; visits (alanine
dipeptide's αL) and transitions (chignolin folding) are both counted from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation import basin_populations
from ..geometry import ramachandran


def committed_states(in_a: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    """Per frame, the core last visited: 0 for a, 1 for b, −1 before either (a wins where both hold)."""
    raw = np.where(in_a, 0, np.where(in_b, 1, -1))
    last_core_frame = np.maximum.accumulate(np.where(raw >= 0, np.arange(len(raw)), 0))
    return raw[last_core_frame]


def count_transitions(in_a: np.ndarray, in_b: np.ndarray) -> tuple[int, int]:
    """(a → b, b → a): changes of the committed core along one trajectory."""
    s = committed_states(in_a, in_b)
    return int(((s[:-1] == 0) & (s[1:] == 1)).sum()), int(((s[:-1] == 1) & (s[1:] == 0)).sum())


def count_visits(inside_core: np.ndarray, outside_core: np.ndarray) -> int:
    """Number of separate entries into a state's core along one trajectory (a start inside counts).

    Entries are commitments to the state: after an entry, a new one needs a frame in ``outside_core``
    first, so recrossings of the boundary in between do not count.
    """
    s = committed_states(inside_core, outside_core)
    return int(len(s) > 0 and s[0] == 0) + int(((s[:-1] != 0) & (s[1:] == 0)).sum())


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
    all_frames = []
    trajs = load_trajectories(run_dirs) if trajectories is None else trajectories
    for traj, thinned in zip(trajs, thin_to_common_interval(trajs)):
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
        entry["populations"] = basin_populations(frames, n_blocks)
        all_frames.append(frames)
    report["total_ns"] = round(sum(r["ns"] for r in report["runs"].values()), 3)
    report["alphaL_visits"] = sum(r["alphaL_visits"] for r in report["runs"].values())
    report["populations"] = basin_populations(np.concatenate(all_frames), n_blocks)
    return report
