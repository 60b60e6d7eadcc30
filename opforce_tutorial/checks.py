"""Physical-sense checks of inputs, run before any work: each refusal is one line that names the
argument, the value and the fix (:class:`InputError`, a ``ValueError``; the CLI prints it without a
traceback)."""

from __future__ import annotations

import numpy as np

#: Kelvin range accepted for simulations and data (below: a temperature in °C is the likely mistake).
TEMPERATURE_RANGE_K = (100.0, 1000.0)
#: Median consecutive-bead distance (Å) a coarse-grained chain can have: heavy-atom bonds (~1.3 Å) to
#: beads several residues apart. Frames in nm have it ten times smaller.
BOND_RANGE_A = (0.8, 12.0)


class InputError(ValueError):
    """An input that cannot be physically right."""


def check_temperature(value, name: str = "temperature") -> float:
    lo, hi = TEMPERATURE_RANGE_K
    if not np.isfinite(value) or not lo <= value <= hi:
        hint = (f" (a temperature in °C? {value:g} °C is {value + 273.15:g} K)" if np.isfinite(value) and 0 <= value < lo
                else "")
        raise InputError(f"{name} = {value!r} K is not a plausible temperature{hint}; give kelvin between "
                         f"{lo:g} and {hi:g}")
    return float(value)


def check_positive(value, name: str, unit: str = "") -> float:
    if value is None or not np.isfinite(value) or not value > 0:
        raise InputError(f"{name} must be a positive number{' in ' + unit if unit else ''}, got {value!r}")
    return float(value)


def check_count(value, name: str, minimum: int = 1) -> int:
    if value is None or int(value) != value or value < minimum:
        raise InputError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def check_md_settings(timestep_fs, friction_per_ps, interval_ps, chunk_frames, threads) -> None:
    """The settings every MD run shares: positive time step and friction, a saving interval of at least one
    step, whole positive chunk and thread counts."""
    check_positive(timestep_fs, "timestep_fs", "fs")
    check_positive(friction_per_ps, "friction_per_ps", "1/ps")
    check_positive(interval_ps, "--interval-ps", "ps")
    if interval_ps * 1000.0 < timestep_fs:
        raise InputError(f"--interval-ps = {interval_ps} ps is shorter than one {timestep_fs} fs step")
    check_count(chunk_frames, "--chunk-frames")
    check_count(threads, "--threads")


def check_frames(positions, name: str = "positions", n_beads: int | None = None) -> np.ndarray:
    """Frames (n, beads, 3) in Å: finite, at least 2 beads (or exactly ``n_beads``), and chain-like
    consecutive-bead distances (:data:`BOND_RANGE_A`; catches frames in nm)."""
    x = np.asarray(positions)
    if x.ndim != 3 or x.shape[2] != 3 or len(x) == 0:
        raise InputError(f"{name} must be (frames, beads, 3) in Å, got shape {x.shape}")
    if x.shape[1] < 2:
        raise InputError(f"{name} has {x.shape[1]} bead per frame; a CG model needs at least 2 beads")
    if n_beads is not None and x.shape[1] != n_beads:
        raise InputError(f"{name} has {x.shape[1]} beads per frame, the system has {n_beads}")
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise InputError(f"{name}: {int(bad.sum())} of {len(x)} frames have non-finite coordinates "
                         f"(first: frame {int(np.flatnonzero(bad)[0])}); remove them first")
    bonds = np.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1)
    median = float(np.median(bonds))
    lo, hi = BOND_RANGE_A
    if not lo <= median <= hi:
        hint = " (in nm? multiply by 10)" if lo / 10 <= median <= hi / 10 else ""
        raise InputError(f"{name}: the median distance between consecutive beads is {median:.3g}, not a bond "
                         f"length in Å{hint}; give positions in Å")
    return x
