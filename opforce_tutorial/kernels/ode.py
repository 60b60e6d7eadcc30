"""ODE integrators for the CNF: fixed-step RK4 and adaptive Dormand–Prince 5(4) on a batch of rows.

Both integrate dy/dt = f(t, y) for a state of shape (B, D): B independent rows (frames) that share one
time grid. The adaptive solver accepts a step when every row's error is within tolerance, so a row
that needs small steps makes the whole batch take them; callers chunk their frames to keep batches
homogeneous and memory bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

Rhs = Callable[[float, torch.Tensor], torch.Tensor]

# Dormand–Prince 5(4) tableau: nodes c, stage coefficients a, 5th-order weights b5 (= last row of a,
# first same as last) and 4th-order weights b4 for the error estimate.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@dataclass
class SolverStats:
    """What adaptive integrations cost: accepted and rejected steps, right-hand-side evaluations.

    ``local_error`` (after a :func:`dopri5` call that was given this object) is the sum over accepted
    steps of |y₅ − y₄|, per row and component, in the state's units: a crude estimate of the global
    error that ignores how errors propagate.
    """

    accepted: int = 0
    rejected: int = 0
    evaluations: int = 0
    local_error: torch.Tensor | None = field(default=None, repr=False)

    def add(self, other: "SolverStats") -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.evaluations += other.evaluations


class SolverStepLimit(RuntimeError):
    """The adaptive solver reached its step cap (a stiff or badly trained vector field)."""


def rk4(rhs: Rhs, y: torch.Tensor, t0: float, t1: float, n_steps: int) -> torch.Tensor:
    """Classical fixed-step Runge–Kutta 4 from t0 to t1 (either direction)."""
    h = (t1 - t0) / n_steps
    t = t0
    for _ in range(n_steps):
        k1 = rhs(t, y)
        k2 = rhs(t + h / 2, y + h / 2 * k1)
        k3 = rhs(t + h / 2, y + h / 2 * k2)
        k4 = rhs(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return y


def dopri5(rhs: Rhs, y: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
           max_steps: int = 10_000, stats: SolverStats | None = None) -> torch.Tensor:
    """Adaptive Dormand–Prince 5(4) for dy/dt = rhs(t, y), y of shape (B, D), from t0 to t1 (either direction).

    A step is accepted when, for every row, the RMS over its components of e_k / (atol + rtol ·
    max(|y_k|, |y_k'|)) is at most 1, where e is the difference of the 5th- and 4th-order solutions:
    every component of the state is in the norm, so a quantity integrated alongside the positions
    (a log-density, a score) is held to the same tolerance. The next step is
    h · clip(0.9 · err^(−1/5), 0.2, 5); more than ``max_steps`` steps (accepted or rejected) in this
    solve raise :class:`SolverStepLimit`. The 5th-order solution is propagated (local extrapolation) and
    the last stage is reused as the next first stage (FSAL). Accepted steps stay in the autograd graph,
    so the result can be differentiated through the solver.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    stats = stats if stats is not None else SolverStats()
    total = t1 - t0

    def f(t, state):
        stats.evaluations += 1
        return rhs(t, state)

    t, h = t0, 0.05 * total
    local_error = torch.zeros_like(y, requires_grad=False)
    k1 = f(t, y)
    steps = 0  # of this solve: ``stats`` may be a running total over many solves
    while (t1 - t) * total > 1e-12 * abs(total):
        if steps >= max_steps:
            raise SolverStepLimit(f"dopri5 needed more than {max_steps} steps (rtol={rtol}, atol={atol}); the vector "
                                  "field may be stiff or badly trained")
        h = min(h, t1 - t) if total > 0 else max(h, t1 - t)
        ks = [k1]
        for i in range(1, 7):
            inc = sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(t + _DP_C[i] * h, y + h * inc))
        new = y + h * sum(b * k for b, k in zip(_DP_A[6], ks) if b != 0.0)
        err = h * sum((b5 - b4) * k for b5, b4, k in zip(_DP_A[6] + (0.0,), _DP_B4, ks))
        with torch.no_grad():
            scale = atol + rtol * torch.maximum(y.abs(), new.abs())
            err_norm = float((err / scale).pow(2).mean(dim=1).sqrt().max())
        steps += 1
        if err_norm <= 1.0:
            t, y, k1 = t + h, new, ks[6]
            stats.accepted += 1
            local_error += err.detach().abs()
        else:
            stats.rejected += 1
        h = h * min(5.0, max(0.2, 0.9 * (err_norm + 1e-12) ** -0.2))
    stats.local_error = local_error
    return y
