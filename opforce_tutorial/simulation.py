"""Batched Langevin dynamics (BAOAB) in torch, for any number of replicas and any frame shape.

Units: positions Å, velocities Å/ps, time ps, masses amu, energies kcal/mol, forces kcal/mol/Å;
a = F/m · 418.4 (Å/ps²) converts (see :mod:`opforce_tutorial.units`).

One BAOAB step of length Δt with friction γ (1/ps), after Leimkuhler & Matthews (2013):

.. math::

    \\text{B:}\\; v &\\leftarrow v + \\tfrac{Δt}{2}\\, F(x)/m \\\\
    \\text{A:}\\; x &\\leftarrow x + \\tfrac{Δt}{2}\\, v \\\\
    \\text{O:}\\; v &\\leftarrow e^{-γΔt}\\, v + \\sqrt{(1 - e^{-2γΔt})\\, k_BT/m}\\; ξ,\\quad ξ \\sim N(0, I) \\\\
    \\text{A:}\\; x &\\leftarrow x + \\tfrac{Δt}{2}\\, v \\\\
    \\text{B:}\\; v &\\leftarrow v + \\tfrac{Δt}{2}\\, F(x)/m

The force at the end of a step is reused at the start of the next, so each step costs one force
evaluation. For a harmonic oscillator BAOAB samples the exact configurational variance k_BT/k at any
stable Δt, which the tests check.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .storage import array_sha256
from .units import KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2


class NonFiniteCoordinatesError(FloatingPointError):
    """Raised when a replica's coordinates become NaN or infinite."""


def simulate_langevin(forces: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, masses, kbt: float,
                      dt: float, friction: float, n_steps: int, save_every: int = 1, burn_in: int = 0,
                      generator: torch.Generator | None = None, progress: bool = True,
                      checkpoint: str | None = None, checkpoint_every: int = 10_000) -> torch.Tensor:
    """Run BAOAB from ``x0`` (``(n_replicas, *frame_shape)``) and return the saved frames.

    ``forces(x)`` returns kcal/mol/Å shaped like ``x``; ``masses`` (amu) broadcasts against a frame
    (e.g. shape ``(n_beads, 1)`` for ``(n_beads, 3)`` frames); ``kbt`` in kcal/mol; ``dt`` in ps;
    ``friction`` γ in 1/ps. Velocities start from the Maxwell–Boltzmann distribution. Frames are
    saved every ``save_every`` steps after ``burn_in`` steps: the result is
    ``(n_saved, n_replicas, *frame_shape)`` with ``n_saved = (n_steps - burn_in) // save_every``.
    Coordinates are checked at every save point (and at the end); non-finite values raise
    :class:`NonFiniteCoordinatesError` naming the replica and the step interval.

    With ``checkpoint`` (a file path) the state (positions, velocities, the frames saved so far, the
    generator's state) is written atomically every ``checkpoint_every`` steps, and a rerun with the same
    arguments resumes from it and returns what an uninterrupted run returns (bitwise, for a deterministic
    force field); a checkpoint of other settings or other starting frames is refused.
    """
    if dt <= 0 or friction < 0 or kbt <= 0:
        raise ValueError(f"need dt > 0 (ps), friction >= 0 (1/ps), kbt > 0 (kcal/mol); got {dt}, {friction}, {kbt}")
    if not 0 <= burn_in <= n_steps or save_every < 1:
        raise ValueError("need 0 <= burn_in <= n_steps and save_every >= 1")
    resume = None if checkpoint is None else _Checkpoint(checkpoint, checkpoint_every, x0, masses, kbt, dt, friction,
                                                         n_steps, save_every, burn_in)
    with torch.no_grad():  # no graph across steps; autograd force fields enable grad themselves
        return _baoab(forces, x0.detach().clone(), masses, kbt, dt, friction, n_steps, save_every, burn_in,
                      generator, progress, resume)


class _Checkpoint:
    """Resumable state of one simulation (see :func:`simulate_langevin`)."""

    def __init__(self, path, every, x0, masses, kbt, dt, friction, n_steps, save_every, burn_in):
        import json

        import numpy as np

        if every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {every}")
        self.path, self.every = str(path), every
        digest = array_sha256(x0.detach().cpu().numpy())
        self.made_by = json.dumps({"x0_sha256": digest, "masses": np.asarray(torch.as_tensor(masses).cpu()).tolist(),
                                   "kbt": kbt, "dt": dt, "friction": friction, "n_steps": n_steps,
                                   "save_every": save_every, "burn_in": burn_in}, sort_keys=True)

    def load(self, device):
        import os

        if not os.path.exists(self.path):
            return None
        state = torch.load(self.path, map_location=device, weights_only=True)
        if state["made_by"] != self.made_by:
            raise ValueError(f"{self.path} is the checkpoint of another simulation (other settings or starting "
                             "frames); delete it to start afresh")
        return state

    def save(self, step, x, v, out, k, last_check, generator):
        from .storage import atomic_torch_save

        atomic_torch_save(self.path, {"made_by": self.made_by, "step": step, "x": x, "v": v, "out": out[:k],
                                      "k": k, "last_check": last_check,
                                      "generator": None if generator is None else generator.get_state()})


def _baoab(forces, x, masses, kbt, dt, friction, n_steps, save_every, burn_in, generator, progress, resume=None):
    m = torch.as_tensor(masses, dtype=x.dtype, device=x.device)
    inv_m = KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2 / m  # (Å/ps²) per (kcal/mol/Å)
    sigma_v = torch.sqrt(kbt * inv_m).expand_as(x)  # thermal velocity scale, Å/ps
    randn = lambda: torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)  # noqa: E731
    v = sigma_v * randn()
    c1 = math.exp(-friction * dt)
    c2 = math.sqrt(1.0 - c1 * c1)
    half = 0.5 * dt
    n_saved = (n_steps - burn_in) // save_every
    out = torch.empty((n_saved, *x.shape), dtype=x.dtype, device=x.device)
    last_check, k, first = 0, 0, 1
    state = None if resume is None else resume.load(x.device)
    if state is not None:
        x, v, k, last_check, first = state["x"], state["v"], state["k"], state["last_check"], state["step"] + 1
        out[:k] = state["out"]
        if generator is not None:
            generator.set_state(state["generator"])
    f = forces(x)
    for step in tqdm(range(first, n_steps + 1), desc="Langevin (BAOAB)", disable=not progress, mininterval=1.0,
                     initial=first - 1, total=n_steps):
        v = v + half * f * inv_m
        x = x + half * v
        v = c1 * v + c2 * sigma_v * randn()
        x = x + half * v
        f = forces(x)
        v = v + half * f * inv_m
        save = step > burn_in and (step - burn_in) % save_every == 0
        if save or step == n_steps:
            _check_finite(x, last_check, step)
            last_check = step
        if save:
            out[k] = x
            k += 1
        if resume is not None and step % resume.every == 0 and step < n_steps:
            resume.save(step, x, v, out, k, last_check, generator)
    return out


def _check_finite(x: torch.Tensor, after_step: int, at_step: int) -> None:
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    if bad.any():
        replicas = bad.nonzero().flatten().tolist()
        raise NonFiniteCoordinatesError(
            f"non-finite coordinates in replica(s) {replicas[:10]}{' ...' if len(replicas) > 10 else ''} "
            f"between steps {after_step} and {at_step}: reduce dt, check the force field's range, "
            "or add a confining prior")
