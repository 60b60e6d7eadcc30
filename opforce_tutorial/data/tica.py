"""A TICA model of a shipped dataset, fitted on its reference trajectories only and saved small, so
that chapters project any model's frames on the data's slow coordinates (``opforce data tica NAME``).

The features are the system's (:func:`opforce_tutorial.systems.cln025.tica_features` for CLN025: all
45 Cα pair distances and the 7 consecutive Cα dihedrals as cos/sin). TICA (deeptime, lag ``lag``
frames) is fitted on the dataset's trajectories as recorded (time-lagged pairs within each trajectory;
no per-frame weights, which a time-lagged covariance cannot use), and ``data/<name>_tica.npz`` keeps the
feature mean, the first ``dim`` instantaneous coefficients, the lag and the implied timescales:
TIC = (features − mean) · coefficients, exactly deeptime's ``transform``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..storage import atomic_savez, register, sha256
from .dataset import DATA_DIR, load_dataset

#: The lag (frames) of CLN025's TICA: the folding MSM's lag (data/cln025_folding.json: 150 frames = 1.5 ns),
#: where its slowest implied timescale (4.7 ns) is over three lags and the faster processes (< 1.3 ns)
#: have decayed; the timescales still grow with the lag (the report says they are not converged).
LAGS = {"cln025": 150}


def fit_tica(name: str, features, lag: int, dim: int = 2, data_dir: Path = DATA_DIR) -> dict:
    """Fit TICA on the trajectories of dataset ``name`` (``features(frames)`` → (n, f)), save and register it."""
    from deeptime.decomposition import TICA

    ds = load_dataset(name, data_dir)
    trajectories = [ds.positions[ds.traj_ids == k] for k in np.unique(ds.traj_ids)]
    series = [features(t) for t in trajectories if len(t) > lag]
    if not series:
        raise ValueError(f"no trajectory of {name} is longer than the lag ({lag} frames)")
    model = TICA(lagtime=lag, dim=dim).fit(series).fetch_model()
    path = data_dir / f"{name}_tica.npz"
    atomic_savez(path, mean=model.mean_0, coefficients=model.instantaneous_coefficients[:, :dim], lag_frames=lag,
                 lag_ps=lag * ds.save_interval_ps, timescales_ps=model.timescales()[:dim] * ds.save_interval_ps)
    entry = {"file": path.name, "sha256": sha256(path), "command": f"opforce data tica {name}",
             "made_from": f"{name}.npz", "lag_frames": lag, "trajectories_used": len(series),
             "timescales_ns": [round(float(t) * ds.save_interval_ps / 1000, 3) for t in model.timescales()[:dim]],
             "created": time.strftime("%Y-%m-%d")}
    register(data_dir / "registry.json", {f"{name}-tica": entry})
    return entry
