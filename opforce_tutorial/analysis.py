"""Histograms and PMFs on shared grids, Jensen–Shannon divergences with their sampling floor, block
errors, state populations, and rare events counted between core sets.

Core sets with hysteresis: a trajectory is committed to a state from the frame it enters that state's
core until it enters another core; crossing the boundary between cores and coming back is no
transition. :func:`committed_states` is that state machine; :func:`count_visits` and
:func:`count_transitions` count from it."""

from __future__ import annotations

from typing import Callable

import numpy as np


def histogram(samples, edges) -> np.ndarray:
    """Bin probabilities of ``samples`` on ``edges`` (samples outside the edges count as mass lost)."""
    samples = np.asarray(samples, dtype=float).ravel()
    if samples.size == 0:
        raise ValueError("no samples to histogram")
    counts, _ = np.histogram(samples, bins=np.asarray(edges))
    return counts / samples.size


def pmf(probabilities, edges, kbt: float) -> np.ndarray:
    """−k_BT log(density) per bin, shifted to zero at its minimum; empty bins are NaN (kcal/mol)."""
    probabilities = np.asarray(probabilities, dtype=float)
    density = probabilities / np.diff(np.asarray(edges, dtype=float))
    with np.errstate(divide="ignore"):
        f = -kbt * np.log(density)
    f[~np.isfinite(f)] = np.nan
    return f - np.nanmin(f)


def js_divergence(p, q) -> float:
    """Jensen–Shannon divergence (nats, between 0 and ln 2) of two histograms on the same bins.

    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m) with m = (p + q)/2; inputs are normalised first.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"histograms must share bins, got shapes {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must have positive mass")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def js_floor(reference, n_samples: int, n_draws: int = 20, seed: int = 0) -> float:
    """Mean JS divergence between ``reference`` and histograms of ``n_samples`` iid draws from it.

    The value a perfect model reaches with this many independent samples; correlated (MD) samples
    have fewer effective samples, so treat it as a lower bound.
    """
    reference = np.asarray(reference, dtype=float)
    reference = reference / reference.sum()
    rng = np.random.default_rng(seed)
    return float(np.mean([js_divergence(reference, rng.multinomial(n_samples, reference)) for _ in range(n_draws)]))


def block_mean(values: np.ndarray, n_blocks: int = 10) -> tuple[float, float]:
    """Mean and its standard error from ``n_blocks`` contiguous blocks (for correlated series)."""
    blocks = np.array_split(np.asarray(values, dtype=float), n_blocks)
    means = np.array([b.mean() for b in blocks if len(b)])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(len(means)))


def state_populations(frames, states: Callable[[np.ndarray], dict[str, np.ndarray]], n_blocks: int = 10
                      ) -> dict[str, dict[str, float]]:
    """Population (mean, block error) of each of a system's states, for time-ordered frames (..., beads, 3).

    ``states(frames)`` maps frames (n, beads, 3) to ``{state: (n,) bool}`` (e.g.
    :func:`opforce_tutorial.systems.alanine_dipeptide.basins`). A simulation's output (n_saved,
    n_replicas, beads, 3) is split into blocks of replicas (which are independent); a single time series
    into contiguous time blocks.
    """
    frames = np.asarray(frames)
    if frames.ndim == 4:  # (time, replicas, beads, 3) -> replica-major, so blocks hold whole replicas
        frames = frames.transpose(1, 0, 2, 3)
    flat = frames.reshape(-1, *frames.shape[-2:])
    return {name: dict(zip(("mean", "block_error"), block_mean(inside, n_blocks)))
            for name, inside in states(flat).items()}


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
