"""Continuous normalizing flow q(y | c): an EGNN vector field, conditional flow matching, exact divergence.

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

Kernel. Φ integrates dx/dt = v_θ from t = 0 to 1: y = Φ(z), z = c + σ_p ξ, and
log q(y | c) = −|Φ⁻¹(y) − c|²/(2σ_p²) − ∫₀¹ div v_θ(t, x(t)) dt + const. The label is
k_BT ∇_y log q(y|c) with c fixed. By default it comes from the same forward solve that makes y: the
score s(t) = ∇ log p_t(x(t)) of the transported density starts at s(0) = −(z − c)/σ_p² and obeys
ds/dt = −(∂v/∂x)ᵀ s − ∇_x(∇·v), so s(1) is the label over k_BT (:mod:`.divergence`, where the exact
divergence and its gradient take 3N − 6 directions instead of 3N). The reference path integrates
backwards from y with the exact divergence and differentiates log q through the solver by autograd.
Everything is mean-free, so labels have zero net force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import remove_mean
from .divergence import exact_divergence, score_rhs
from .ode import SolverStats, SolverStepLimit, dopri5, rk4
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


def _flow_rhs(field: EGNNVectorField, shape, with_divergence: bool):
    """dx/dt = v (and dl/dt = div v, the full trace) on a flat state (B, 3N [+ 1])."""
    n = shape[1] * 3

    def rhs(t, state):
        x = state[:, :n].reshape(shape)
        if with_divergence:
            v, d = exact_divergence(field, t, x)
            return torch.cat([v.flatten(1), d[:, None]], dim=1)
        return field(t, x).flatten(1)

    return rhs


def _with_log_density(x: torch.Tensor, with_divergence: bool) -> torch.Tensor:
    state = x.flatten(1)
    return torch.cat([state, torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)], 1) if with_divergence else state


def integrate(field: EGNNVectorField, x: torch.Tensor, t0: float, t1: float, n_steps: int, with_divergence: bool = False):
    """Fixed-step RK4 for dx/dt = v(t, x) from t0 to t1 (either direction).

    With ``with_divergence`` it also integrates dl/dt = div v(t, x) exactly (trace of the Jacobian) and
    returns ``(x(t1), l)`` with l = ∫_{t0}^{t1} div v dt; otherwise ``(x(t1), None)``.
    """
    end = rk4(_flow_rhs(field, x.shape, with_divergence), _with_log_density(x, with_divergence), t0, t1, n_steps)
    return end[:, : x[0].numel()].reshape(x.shape), (end[:, -1] if with_divergence else None)


def integrate_adaptive(field: EGNNVectorField, x: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5,
                       atol: float = 1e-5, with_divergence: bool = False, max_steps: int = 10_000,
                       stats: SolverStats | None = None):
    """Adaptive Dormand–Prince 5(4) (:func:`~opforce_tutorial.kernels.ode.dopri5`) for dx/dt = v(t, x),
    and dl/dt = div v with ``with_divergence`` (l is in the error norm). ``atol`` is in Å.
    Returns ``(x(t1), l or None)``; accepted steps stay in the autograd graph.
    """
    end = dopri5(_flow_rhs(field, x.shape, with_divergence), _with_log_density(x, with_divergence), t0, t1, rtol,
                 atol, max_steps, stats)
    return end[:, : x[0].numel()].reshape(x.shape), (end[:, -1] if with_divergence else None)


#: Peak bytes of one score right-hand side, per frame and per (bead pair · hidden unit · layer) at
#: float32: a fixed part for the forward graph and one per internal direction in a backward pass.
#: Upper bounds of the CPU peak RSS measured at 5 and 10 beads, chunks of 8–64 and 1–24 directions
#: per pass (``benchmarks/cnf_labels.py`` checks the peak of a chunk of 64 at 10 beads).
_BYTES_PER_FRAME_UNIT, _BYTES_PER_DIRECTION_UNIT = 400, 120


#: The largest chunk planned on a CPU: chunks of 32 frames made labels 1.02 × (5 beads) and 1.27 × (10 beads)
#: as fast as chunks of 256 on the 2-core x86_64 CPU (``make bench-cnf-chunks``, README); smaller chunks were
#: slower at 5 beads. Other devices keep :data:`MAX_CHUNK`.
CPU_MAX_CHUNK = 32
#: The largest chunk :func:`chunk_plan` gives when the memory budget allows more.
MAX_CHUNK = 512


def memory_budget_gb(device) -> float:
    """Memory for CNF labels on ``device``: half the free device memory on CUDA, 2 GB otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return 0.5 * torch.cuda.mem_get_info(device)[0] / 1e9
    return 2.0


def chunk_plan(n_beads: int, hidden: int, n_layers: int, itemsize: int, memory_budget_gb: float,
               chunk_size: int | None = None, max_chunk: int = MAX_CHUNK) -> tuple[int, int]:
    """(frames per solve, internal directions per backward pass) whose score pass fits the budget.

    A right-hand side holds about U · (a + b · g) · itemsize/4 bytes per frame, with
    U = beads² · hidden · layers and g directions per pass (a, b: ``_BYTES_PER_FRAME_UNIT``,
    ``_BYTES_PER_DIRECTION_UNIT``). Without ``chunk_size``: as many frames as fit with all 3N − 6
    directions in one pass, at most ``max_chunk`` (if none fits: one frame, fewer directions per pass). With it: that many frames and as many directions
    per pass as fit (at least one; if even one does not fit, fewer frames). Memory is bounded by
    construction, whatever the device.
    """
    if not memory_budget_gb > 0:
        raise ValueError(f"memory_budget_gb must be positive, got {memory_budget_gb!r}")
    unit = n_beads**2 * hidden * n_layers * itemsize / 4
    directions = max(1, 3 * n_beads - 6)

    def frames_that_fit(g):
        return int(memory_budget_gb * 1e9 / (unit * (_BYTES_PER_FRAME_UNIT + _BYTES_PER_DIRECTION_UNIT * g)))

    if chunk_size is None:
        if frames_that_fit(directions) >= 1:
            return min(max_chunk, frames_that_fit(directions)), directions
        chunk_size = 1  # not even one frame with every direction: one frame, fewer directions per pass
    if frames_that_fit(1) < chunk_size:
        return max(1, frames_that_fit(1)), 1
    per_frame = memory_budget_gb * 1e9 / (unit * chunk_size)
    return chunk_size, int(min(directions, (per_frame - _BYTES_PER_FRAME_UNIT) // _BYTES_PER_DIRECTION_UNIT))


class CNFDensity:
    """The CNF's conditional density q(y | c) (see module docstring); frames (B, N, 3) in Å.

    z = c + σ_p Pξ, y = Φ(z). ``prior_std`` σ_p (Å) must be the one used in training. As a
    :class:`~opforce_tutorial.kernels.reverse.ConditionalDensity` it has no auxiliaries; wrapped in
    :class:`~opforce_tutorial.kernels.reverse.ReverseNoiseKernel` (``mean_free=True``, the σ_n of training)
    it labels with k_BT ∇_y log q(y | c), the score coming with the draw (:meth:`sample_with_score`).

    Scores (``method``):

    * ``"score"`` (default): one forward solve of the pair (x, s) from (z, −(z − c)/σ_p²), with
      dx/dt = v and ds/dt = −Jᵀs − ∇_x(∇·v) (:mod:`~opforce_tutorial.kernels.divergence`); then y = x(1)
      and s(1) = ∇_y log q(y | c). The divergence and its gradient come from the 3N − 6 internal
      directions plus a closed-form rotation term. Nothing is kept in an autograd graph across steps,
      so memory is that of one right-hand side.
    * ``"inverse"`` (the reference path): y from a forward solve, then the backward solve from y with
      the exact divergence gives log q(y | c), differentiated by autograd through the whole solve.
      Its memory grows with batch × beads² × steps.

    Solver: ``"dopri5"`` (default; adaptive Dormand–Prince, ``rtol`` and ``atol`` both 1e-5 by default;
    the error norm covers every integrated component: x in Å and s in 1/Å for ``"score"``, x and the
    log-density for ``"inverse"``) or ``"rk4"`` (``n_steps`` fixed steps, for quick checks).

    Memory: frames are solved in chunks of at most ``chunk_size``; the chunk (when not given: at most
    :data:`CPU_MAX_CHUNK` frames for a field on the CPU) and the internal directions per backward pass come
    from ``memory_budget_gb`` (:func:`chunk_plan`; the plan is ``chunk_size`` and ``group_size`` after
    construction). A chunk whose dopri5 solve needs more than ``max_steps`` steps gets
    NaN positions and labels (counted in ``failed_chunks``): the labelling pipeline drops them like
    any non-finite label, instead of one stiff frame stopping a whole labelling run.

    Cost and error: ``stats`` sums the solver's evaluations and steps over all chunks; after each
    :meth:`solve`, ``last_costs`` holds per draw the evaluations, accepted and rejected steps of its
    chunk's solve and ``score_error``, an estimate of the score's error (the summed local error
    estimates of s, largest component; 1/Å; NaN for a failed chunk, ``rk4`` or ``"inverse"``).
    """

    def __init__(self, field: EGNNVectorField, prior_std: float, solver: str = "dopri5", n_steps: int = 20, rtol: float = 1e-5, atol: float = 1e-5,
                 chunk_size: int | None = None, max_steps: int = 10_000, method: str = "score",
                 memory_budget_gb: float = 2.0):
        if not prior_std > 0:
            raise ValueError(f"prior_std must be a positive standard deviation in Å, got {prior_std!r}")
        if solver not in ("dopri5", "rk4"):
            raise ValueError(f"solver must be 'dopri5' or 'rk4', got {solver!r}")
        if method not in ("score", "inverse"):
            raise ValueError(f"method must be 'score' or 'inverse', got {method!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.field, self.prior_std = field, float(prior_std)
        self.solver, self.n_steps, self.rtol, self.atol = solver, n_steps, rtol, atol
        self.method, self.memory_budget_gb, self.max_steps = method, memory_budget_gb, max_steps
        cfg = field.config
        weights = next(field.parameters())
        self.chunk_size, self.group_size = chunk_plan(len(cfg.bead_types), cfg.hidden, cfg.n_layers,
                                                      weights.element_size(), memory_budget_gb, chunk_size,
                                                      CPU_MAX_CHUNK if weights.device.type == "cpu" else MAX_CHUNK)
        self.stats = SolverStats()
        self.failed_chunks = 0
        self.last_costs: dict[str, torch.Tensor] = {}

    def _integrate(self, x, t0, t1, with_divergence=False, stats=None):
        if self.solver == "rk4":
            return integrate(self.field, x, t0, t1, self.n_steps, with_divergence)
        return integrate_adaptive(self.field, x, t0, t1, self.rtol, self.atol, with_divergence, self.max_steps,
                                  stats=stats if stats is not None else self.stats)

    def log_prob(self, y: torch.Tensor, c: torch.Tensor, aux: None = None, stats: SolverStats | None = None
                 ) -> torch.Tensor:
        """log q(y | c) on the mean-free subspace (differentiable in y): backward pass with exact divergence.

        The solve's cost is counted in ``stats`` (default: the kernel's running total)."""
        z, int_div_backward = self._integrate(y, 1.0, 0.0, with_divergence=True, stats=stats)
        d = z - c
        dim = (y.shape[1] - 1) * 3
        log_base = -0.5 * (d**2).sum(dim=(1, 2)) / self.prior_std**2 - dim * (0.5 * math.log(2 * math.pi) + math.log(self.prior_std))
        # l(0) − l(1) = −∫₀¹ div dt  and  log q(y) = log q₀(z) − ∫₀¹ div v(t, x(t)) dt
        return log_base + int_div_backward

    def forward_score(self, z: torch.Tensor, c: torch.Tensor, stats: SolverStats | None = None):
        """(y, ∇_y log q(y | c), error estimate per frame) by one forward solve of (x, s) from z (detached)."""
        shape, n = z.shape, z[0].numel()

        def rhs(t, state):
            v, ds = score_rhs(self.field, t, state[:, :n].reshape(shape), state[:, n:].reshape(shape),
                              self.group_size)
            return torch.cat([v.flatten(1), ds.flatten(1)], dim=1)

        start = torch.cat([z.flatten(1), (-(z - c) / self.prior_std**2).flatten(1)], dim=1)
        stats = stats if stats is not None else SolverStats()
        if self.solver == "rk4":
            end = rk4(rhs, start, 0.0, 1.0, self.n_steps)
            error = torch.full((len(z),), float("nan"), dtype=z.dtype, device=z.device)
        else:
            end = dopri5(rhs, start, 0.0, 1.0, self.rtol, self.atol, self.max_steps, stats)
            error = stats.local_error[:, n:].max(dim=1).values
        return end[:, :n].reshape(shape), remove_mean(end[:, n:].reshape(shape)), error

    def base_draw(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = c + σ_p Pξ, the start of the flow."""
        return c + self.prior_std * remove_mean(torch.randn(c.shape, dtype=c.dtype, device=c.device,
                                                            generator=generator))

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None):
        """(y, None) with y = Φ(z), z = c + σ_p Pξ: the draw alone (one forward solve of x)."""
        y, _ = self._integrate(self.base_draw(c, generator), 0.0, 1.0)
        return y, None

    def sample_with_score(self, c: torch.Tensor, generator: torch.Generator | None = None):
        """(y, ∇_y log q(y | c)) for a draw z = c + σ_p Pξ: :meth:`solve`."""
        return self.solve(self.base_draw(c, generator), c)

    def solve(self, z: torch.Tensor, c: torch.Tensor):
        """(y, ∇_y log q(y | c)) from base draws z around noised frames c (both (B, N, 3), Å), chunk by chunk."""
        ys, scores, costs = [], [], {k: [] for k in ("evaluations", "accepted", "rejected", "score_error")}
        for sl in torch.split(torch.arange(len(z)), self.chunk_size):
            chunk = SolverStats()
            error = torch.full((len(sl),), float("nan"), dtype=z.dtype, device=z.device)
            try:
                if self.method == "score":
                    y, score, error = self.forward_score(z[sl], c[sl], chunk)
                else:
                    with torch.no_grad():
                        y, _ = self._integrate(z[sl], 0.0, 1.0, stats=chunk)
                    y = y.detach().requires_grad_(True)
                    with torch.enable_grad():
                        (score,) = torch.autograd.grad(self.log_prob(y, c[sl], stats=chunk).sum(), y)
            except SolverStepLimit:
                self.failed_chunks += 1
                y = score = torch.full_like(z[sl], float("nan"))
            self.stats.add(chunk)
            ys.append(y.detach())
            scores.append(score.detach())
            for key, val in (("evaluations", chunk.evaluations), ("accepted", chunk.accepted),
                             ("rejected", chunk.rejected)):
                costs[key].append(torch.full((len(sl),), val, dtype=torch.int64))
            costs["score_error"].append(error.detach().cpu())
        self.last_costs = {k: torch.cat(v) for k, v in costs.items()}
        return torch.cat(ys), torch.cat(scores)


@dataclass
class CNFTraining:
    """Conditional flow-matching settings (lengths in Å); the authors' reference implementation uses σ_n = σ_p = 0.05 for chignolin."""

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
        return remove_mean(torch.randn(x.shape, dtype=x.dtype, generator=gen).to(device))

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
