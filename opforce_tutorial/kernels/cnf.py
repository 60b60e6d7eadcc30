"""Continuous normalizing flow kernel: an EGNN vector field, conditional flow matching, exact divergence.

Vector field. v_θ(t, x) on frames x ∈ R^{N×3} (Å, mean-free) is an E(n)-equivariant graph network on
the fully connected bead graph: node features h_i = one-hot bead type ⊕ time; each layer computes
messages m_ij = φ_e(h_i, h_j, |x_i − x_j|²), attention a_ij = sigmoid(φ_a(m_ij)), node updates
h_i ← h_i + φ_h(h_i, Σ_j a_ij m_ij) and coordinate updates
x_i ← x_i + (1/(N−1)) Σ_j (x_i − x_j) tanh(φ_x(m_ij)). The output x_L − x₀ is made mean-free. It
rotates with the input and ignores translations.

Training (conditional flow matching, Lipman et al. 2023): x₀ = c + σ_p ξ with c = x + σ_n Pε the noised
frame, x₁ = x the clean frame, x_t = (1 − t) x₀ + t x₁ + σ_fm η, and the regression target x₁ − x₀;
all mean-free. The network never sees c: the kernel's dependence on c comes from starting the ODE at
N(c, σ_p²).

Kernel. Φ integrates dx/dt = v_θ from t = 0 to 1: y = Φ(z), z = c + σ_p ξ. Backwards from y,
z = Φ⁻¹(y) and log|det ∂Φ⁻¹/∂y| = −∫₀¹ div v_θ(t, x(t)) dt with the exact divergence (the trace of
the Jacobian, all 3N rows from one batched backward pass). Then
log q(y | c) = −|z − c|²/(2σ_p²) − log|det ∂Φ/∂z| + const, and the label is k_BT ∇_y log q(y|c) with
c fixed, by autograd through the solver. Everything is mean-free, so labels have zero net force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .training import train_on_frames


@dataclass
class EGNNConfig:
    bead_types: list[int]
    hidden: int = 64
    n_layers: int = 5


#: A CPU-sized EGNN vector field (the book's chapter 2, ``opforce train-kernel --size small``).
SMALL_EGNN = dict(hidden=32, n_layers=3)


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.attn = nn.Linear(hidden, 1)
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, h, x):
        n = x.shape[-2]
        diff = x[..., :, None, :] - x[..., None, :, :]  # (..., N, N, 3): x_i − x_j
        d2 = (diff**2).sum(-1, keepdim=True)
        hi = h[..., :, None, :].expand(*h.shape[:-2], n, n, h.shape[-1])
        m = self.edge(torch.cat([hi, hi.transpose(-2, -3), d2], dim=-1))
        off_diag = 1.0 - torch.eye(n, dtype=x.dtype, device=x.device)[..., None]
        m = m * torch.sigmoid(self.attn(m)) * off_diag
        h = h + self.node(torch.cat([h, m.sum(-2)], dim=-1))
        x = x + (diff * torch.tanh(self.coord(m)) * off_diag).sum(-2) / (n - 1)
        return h, x


class EGNNVectorField(nn.Module):
    """v_θ(t, x) for mean-free frames x of shape (..., N, 3); t broadcasts against the leading dims."""

    def __init__(self, config: EGNNConfig):
        super().__init__()
        self.config = config
        n_types = max(config.bead_types) + 1
        self.register_buffer("onehot", nn.functional.one_hot(torch.tensor(config.bead_types), n_types).float())
        self.embed = nn.Linear(n_types + 1, config.hidden)
        self.layers = nn.ModuleList(EGNNLayer(config.hidden) for _ in range(config.n_layers))

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-2])
        feats = torch.cat([self.onehot.to(x.dtype).expand(*x.shape[:-2], -1, -1),
                           t[..., None, None].expand(*x.shape[:-1], 1)], dim=-1)
        h, y = self.embed(feats), x
        for layer in self.layers:
            h, y = layer(h, y)
        v = y - x
        return v - v.mean(dim=-2, keepdim=True)


def exact_divergence(field: EGNNVectorField, t, x: torch.Tensor):
    """(v, div v) at (t, x) for a batch (B, N, 3): the trace of the full 3N×3N Jacobian per frame.

    One forward pass, then all 3N Jacobian rows from one batched backward pass: ``autograd.grad`` with
    the 3N one-hot cotangents and ``is_grads_batched`` (vmap over the cotangents), not a Python loop
    over dimensions. Row k of frame b is ∂v_{b,k}/∂x_b, so div v_b = Σ_k rows[k, b, k]. When ``x``
    requires grad (labels differentiate through the solver) the result is differentiable; otherwise
    it is detached.
    """
    differentiable = x.requires_grad and torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if differentiable else x.detach().requires_grad_(True)
        v = field(t, xg)
        n = v[0].numel()
        basis = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, 1, *v.shape[1:]).expand(n, *v.shape)
        (rows,) = torch.autograd.grad(v, xg, grad_outputs=basis, is_grads_batched=True, create_graph=differentiable)
    div = rows.reshape(n, len(x), n).diagonal(dim1=0, dim2=2).sum(-1)
    return (v, div) if differentiable else (v.detach(), div.detach())


def loop_divergence(field: EGNNVectorField, t, x: torch.Tensor):
    """Reference implementation: one backward pass per dimension (3N passes). For tests and benchmarks."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = field(t, x)
        flat = v.reshape(len(x), -1)
        div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
            div = div + g.reshape(len(x), -1)[:, i]
    return v.detach(), div.detach()


def integrate(field: EGNNVectorField, x: torch.Tensor, t0: float, t1: float, n_steps: int, with_divergence: bool = False):
    """Fixed-step RK4 for dx/dt = v(t, x) from t0 to t1 (either direction).

    With ``with_divergence`` it also integrates dl/dt = div v(t, x) exactly (trace of the Jacobian) and
    returns ``(x(t1), l)`` with l = ∫_{t0}^{t1} div v dt; otherwise ``(x(t1), None)``.
    """
    h = (t1 - t0) / n_steps

    def rhs(t, y):
        if with_divergence:
            return exact_divergence(field, t, y)
        return field(t, y), None

    l = torch.zeros(len(x), dtype=x.dtype, device=x.device) if with_divergence else None
    t = t0
    for _ in range(n_steps):
        k1, d1 = rhs(t, x)
        k2, d2 = rhs(t + h / 2, x + h / 2 * k1)
        k3, d3 = rhs(t + h / 2, x + h / 2 * k2)
        k4, d4 = rhs(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if with_divergence:
            l = l + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        t += h
    return x, l


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
    """What an adaptive integration cost: accepted and rejected steps, vector-field evaluations."""

    accepted: int = 0
    rejected: int = 0
    evaluations: int = 0


def integrate_adaptive(field: EGNNVectorField, x: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5,
                       atol: float = 1e-5, with_divergence: bool = False, max_steps: int = 10_000,
                       stats: SolverStats | None = None):
    """Adaptive Dormand–Prince 5(4) for dx/dt = v(t, x) (and dl/dt = div v with ``with_divergence``).

    One step size for the whole batch. A step is accepted when, for every frame, the RMS over its
    components of e_k / (atol + rtol · max(|x_k|, |x_k'|)) is at most 1, where e is the difference of the
    5th- and 4th-order solutions (x in Å, so ``atol`` is in Å; l is included in the norm). The next step
    is h · clip(0.9 · err^(−1/5), 0.2, 5); more than ``max_steps`` steps (accepted or rejected) in this
    solve raise :class:`SolverStepLimit`. The 5th-order solution is propagated (local extrapolation)
    and the last stage is reused as the next first stage. Accepted steps stay in the autograd graph, so
    labels can be differentiated through the solver. Returns ``(x(t1), l or None)``.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    stats = stats if stats is not None else SolverStats()
    total = t1 - t0

    def rhs(t, y):
        stats.evaluations += 1
        if with_divergence:
            v, d = exact_divergence(field, t, y)
            return torch.cat([v.flatten(1), d[:, None]], dim=1)
        return field(t, y).flatten(1)

    shape = x.shape
    state = x.flatten(1)
    if with_divergence:
        state = torch.cat([state, torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)

    def unflatten(s):
        return s[:, : shape[1] * 3].reshape(shape) if with_divergence else s.reshape(shape)

    t, h = t0, 0.05 * total
    k1 = rhs(t, unflatten(state))
    steps = 0  # of this solve: ``stats`` may be a running total over many solves
    while (t1 - t) * total > 1e-12 * abs(total):
        if steps >= max_steps:
            raise SolverStepLimit(f"dopri5 needed more than {max_steps} steps (rtol={rtol}, atol={atol}); the vector "
                               "field may be stiff or badly trained")
        h = min(h, t1 - t) if total > 0 else max(h, t1 - t)
        ks = [k1]
        for i in range(1, 7):
            inc = sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(rhs(t + _DP_C[i] * h, unflatten(state + h * inc)))
        new = state + h * sum(b * k for b, k in zip(_DP_A[6], ks) if b != 0.0)
        err = h * sum((b5 - b4) * k for b5, b4, k in zip(_DP_A[6] + (0.0,), _DP_B4, ks))
        with torch.no_grad():
            scale = atol + rtol * torch.maximum(state.abs(), new.abs())
            err_norm = float((err / scale).pow(2).mean(dim=1).sqrt().max())
        steps += 1
        if err_norm <= 1.0:
            t, state, k1 = t + h, new, ks[6]
            stats.accepted += 1
        else:
            stats.rejected += 1
        h = h * min(5.0, max(0.2, 0.9 * (err_norm + 1e-12) ** -0.2))
    x_end = unflatten(state)
    return x_end, (state[:, -1] if with_divergence else None)


class SolverStepLimit(RuntimeError):
    """The adaptive solver reached its step cap (a stiff or badly trained vector field)."""


class CNFKernel:
    """Reverse-noise kernel of the CNF (see module docstring); frames (B, N, 3) in Å.

    c = x + σ_n Pε, z = c + σ_p Pξ, y = Φ(z), label = k_BT ∇_y log q(y | c).
    ``noise_std`` σ_n and ``prior_std`` σ_p (Å) must be those used in training.

    Solver: ``"dopri5"`` (default; adaptive Dormand–Prince with ``rtol`` and ``atol`` in Å, both 1e-5
    by default, for sampling and for the backward log-density pass) or ``"rk4"`` (``n_steps`` fixed
    steps, for quick checks). The label differentiates the backward pass, whose exact divergence is
    itself a Jacobian, so its memory grows with batch × beads² × steps: frames are labelled in chunks
    of ``chunk_size``. A chunk whose dopri5 solve needs more than ``max_steps`` steps gets NaN positions
    and labels (counted in ``failed_chunks``): the labelling pipeline drops them like any non-finite
    label, instead of one stiff frame stopping a whole labelling run.
    """

    def __init__(self, field: EGNNVectorField, noise_std: float, prior_std: float, kbt: float,
                 solver: str = "dopri5", n_steps: int = 20, rtol: float = 1e-5, atol: float = 1e-5,
                 chunk_size: int = 16, max_steps: int = 10_000):
        for name, val in (("noise_std", noise_std), ("prior_std", prior_std), ("kbt", kbt)):
            if not val > 0:
                raise ValueError(f"{name} must be positive, got {val!r}")
        if solver not in ("dopri5", "rk4"):
            raise ValueError(f"solver must be 'dopri5' or 'rk4', got {solver!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.field, self.noise_std, self.prior_std, self.kbt = field, noise_std, prior_std, kbt
        self.solver, self.n_steps, self.rtol, self.atol, self.chunk_size = solver, n_steps, rtol, atol, chunk_size
        self.max_steps = max_steps
        self.stats = SolverStats()
        self.failed_chunks = 0

    def _integrate(self, x, t0, t1, with_divergence=False):
        if self.solver == "rk4":
            return integrate(self.field, x, t0, t1, self.n_steps, with_divergence)
        return integrate_adaptive(self.field, x, t0, t1, self.rtol, self.atol, with_divergence, self.max_steps,
                                  stats=self.stats)

    def log_prob(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """log q(y | c) on the mean-free subspace (differentiable in y): backward pass with exact divergence."""
        z, int_div_backward = self._integrate(y, 1.0, 0.0, with_divergence=True)
        d = z - c
        dim = (y.shape[1] - 1) * 3
        log_base = -0.5 * (d**2).sum(dim=(1, 2)) / self.prior_std**2 - dim * (0.5 * math.log(2 * math.pi) + math.log(self.prior_std))
        # l(0) − l(1) = −∫₀¹ div dt  and  log q(y) = log q₀(z) − ∫₀¹ div v(t, x(t)) dt
        return log_base + int_div_backward

    def sample_with_forces(self, x: torch.Tensor, generator: torch.Generator | None = None):
        def mean_free_noise():
            e = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            return e - e.mean(dim=1, keepdim=True)

        c = x + self.noise_std * mean_free_noise()
        z = c + self.prior_std * mean_free_noise()
        ys, labels = [], []
        for sl in torch.split(torch.arange(len(x)), self.chunk_size):
            try:
                with torch.no_grad():
                    y, _ = self._integrate(z[sl], 0.0, 1.0)
                y = y.detach().requires_grad_(True)
                with torch.enable_grad():
                    (score,) = torch.autograd.grad(self.log_prob(y, c[sl]).sum(), y)
            except SolverStepLimit:
                self.failed_chunks += 1
                y = score = torch.full_like(z[sl], float("nan"))
            ys.append(y.detach())
            labels.append(self.kbt * score)
        return torch.cat(ys), torch.cat(labels)


@dataclass
class CNFTraining:
    """Conditional flow-matching settings (lengths in Å); the seed's chignolin setting is σ_n = σ_p = 0.05."""

    noise_std: float
    prior_std: float
    sigma_fm: float = 0.01
    n_steps: int = 20_000
    batch_size: int = 512
    lr: float = 5e-4
    val_fraction: float = 0.1
    eval_every: int = 500
    checkpoint_every: int = 1000
    seed: int = 0


def _flow_matching_batch(x, settings: CNFTraining, gen, device):
    """(t, x_t, target velocity) for clean frames x: x₀ = x + σ_n Pε + σ_p Pξ, x₁ = x, all mean-free."""
    x = x.to(device)
    x = x - x.mean(dim=1, keepdim=True)

    def mean_free_noise():
        e = torch.randn(x.shape, dtype=x.dtype, generator=gen).to(device)
        return e - e.mean(dim=1, keepdim=True)

    x0 = x + settings.noise_std * mean_free_noise() + settings.prior_std * mean_free_noise()
    t = torch.rand(len(x), dtype=x.dtype, generator=gen).to(device)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x + settings.sigma_fm * mean_free_noise()
    return t, xt, x - x0


def train_cnf(positions: torch.Tensor, config: EGNNConfig, settings: CNFTraining, device="cpu",
              checkpoint: str | None = None, progress: bool = True):
    """Train the EGNN vector field by conditional flow matching; returns ``(field, history)``.

    Loss: mean over beads and dimensions of |v_θ(t, x_t) − (x₁ − x₀)|². A random ``val_fraction`` of the
    frames gives the validation loss (fixed draws) every ``eval_every`` steps; checkpoint/resume as in
    :func:`opforce_tutorial.kernels.coupling.train_coupling_flow`.
    """
    def fm_loss(model, batch):
        t, xt, target = batch
        return ((model(t, xt) - target) ** 2).mean()

    return train_on_frames(positions, settings, lambda: EGNNVectorField(config), _flow_matching_batch, fm_loss, device,
                           checkpoint, "train CNF (flow matching)", progress)
