"""Timewarp-style conditional coupling flow q(y, v | c) over CG frames, with auxiliary variables.

Variables (frames of N beads, Å): the conditioning frame c (a noised copy of the data), the modelled
displacement δ = y − c, and auxiliary "velocities" v ∈ R^{N×3}. The base is
N(δ₀; 0, σ_δ² I) N(v₀; 0, σ_v² I) with learnable σ_δ, σ_v. Each of the ``n_coupling_layers`` blocks
applies two affine couplings with per-bead, per-Cartesian-dimension scales:

.. math::

    δ ← δ ⊙ e^{s_δ(c, v)} + t_δ(c, v), \\qquad v ← v ⊙ e^{s_v(c, δ)} + t_v(c, δ),

so the Jacobian is triangular and log q(δ, v | c) = log N(δ₀) + log N(v₀) − Σ s over all layers, with
(δ₀, v₀) obtained by running the blocks backwards. Scales are bounded, s = s_max tanh(·).

Each s and t comes from a conditioner: per-bead input = bead-type embedding + MLP([c − c̄, u]) with u
the untransformed variable, then transformer blocks whose attention weights are Gaussian RBFs of the
conditioning positions' pairwise distances, softmax_j(−|c_i − c_j|²/2ℓ_h²), one lengthscale ℓ_h per
head (the attention is fixed by c and does not depend on the transformed variable), then an output
MLP. The flow is not rotation-equivariant; train it with a random rotation per sample
(:func:`random_rotations`).

Kernel labels (:meth:`CouplingFlow.log_prob` differentiated in y at fixed c and v): the y block of
k_BT ∇_(y,v) log q(y, v | c); its expectation over v given y is the marginal score, and the v block
is discarded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class CouplingFlowConfig:
    """Architecture of :class:`CouplingFlow` (lengths in Å). Defaults follow the seed's chignolin setting."""

    bead_types: list[int]
    n_coupling_layers: int = 8
    n_transformer_layers: int = 3
    d_model: int = 128
    lengthscales: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0, 5.0])
    d_ff: int = 2048
    max_log_scale: float = 2.0

    def __post_init__(self):
        if not self.lengthscales or min(self.lengthscales) <= 0:
            raise ValueError(f"need at least one positive lengthscale (Å), got {self.lengthscales}")


class RBFAttentionBlock(nn.Module):
    """Transformer block whose attention weights are Gaussian RBFs of conditioning distances.

    Each head h averages its values over beads j with weights softmax_j(−|c_i − c_j|²/2ℓ_h²); heads
    have ⌈d_model / n_heads⌉ channels each (so 6 heads fit d_model = 128).
    """

    def __init__(self, d_model: int, lengthscales: list[float], d_ff: int):
        super().__init__()
        self.n_heads = len(lengthscales)
        self.d_head = -(-d_model // self.n_heads)
        self.register_buffer("inv_two_l2", 1.0 / (2.0 * torch.tensor(lengthscales) ** 2))
        self.value = nn.Linear(d_model, self.n_heads * self.d_head)
        self.out = nn.Linear(self.n_heads * self.d_head, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, h: torch.Tensor, dist2: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        attn = torch.softmax(-dist2[:, None] * self.inv_two_l2.to(h.dtype)[None, :, None, None], dim=-1)  # (B,H,N,N)
        v = self.value(h).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
        h = self.norm1(h + self.out((attn @ v).transpose(1, 2).reshape(b, n, -1)))
        return self.norm2(h + self.ff(h))


class Conditioner(nn.Module):
    """(c, u) ↦ (s, t), each (B, N, 3)."""

    def __init__(self, cfg: CouplingFlowConfig):
        super().__init__()
        n_types = max(cfg.bead_types) + 1
        self.register_buffer("types", torch.tensor(cfg.bead_types, dtype=torch.long))
        self.embed = nn.Embedding(n_types, cfg.d_model)
        self.inp = nn.Sequential(nn.Linear(6, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.blocks = nn.ModuleList(RBFAttentionBlock(cfg.d_model, cfg.lengthscales, cfg.d_ff)
                                    for _ in range(cfg.n_transformer_layers))
        self.outp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, 6))
        nn.init.zeros_(self.outp[-1].weight)  # start as the identity map
        nn.init.zeros_(self.outp[-1].bias)
        self.max_log_scale = cfg.max_log_scale

    def forward(self, c_centred, dist2, u):
        h = self.inp(torch.cat([c_centred, u], dim=-1)) + self.embed(self.types)
        for block in self.blocks:
            h = block(h, dist2)
        s, t = self.outp(h).chunk(2, dim=-1)
        return self.max_log_scale * torch.tanh(s / self.max_log_scale), t


class CouplingFlow(nn.Module):
    """q(y, v | c) (see module docstring). Frames are (B, N, 3) in Å."""

    def __init__(self, config: CouplingFlowConfig):
        super().__init__()
        self.config = config
        self.n_beads = len(config.bead_types)
        self.cond_y = nn.ModuleList(Conditioner(config) for _ in range(config.n_coupling_layers))
        self.cond_v = nn.ModuleList(Conditioner(config) for _ in range(config.n_coupling_layers))
        self.log_std_y = nn.Parameter(torch.tensor(math.log(0.05)))
        self.log_std_v = nn.Parameter(torch.tensor(0.0))

    @staticmethod
    def _geometry(c):
        cc = c - c.mean(dim=1, keepdim=True)
        return cc, torch.cdist(cc, cc) ** 2

    def _base_log_prob(self, d0, v0):
        def log_normal(z, log_std):
            return (-0.5 * (z / log_std.exp()) ** 2 - log_std - 0.5 * _LOG_2PI).flatten(1).sum(-1)

        return log_normal(d0, self.log_std_y) + log_normal(v0, self.log_std_v)

    def forward_map(self, c, d0, v0):
        """Base (δ₀, v₀) → (δ, v); returns (δ, v, log|det ∂(δ,v)/∂(δ₀,v₀)|)."""
        cc, dist2 = self._geometry(c)
        d, v, logdet = d0, v0, torch.zeros(len(c), dtype=c.dtype, device=c.device)
        for fy, fv in zip(self.cond_y, self.cond_v):
            s, t = fy(cc, dist2, v)
            d = d * s.exp() + t
            logdet = logdet + s.flatten(1).sum(-1)
            s, t = fv(cc, dist2, d)
            v = v * s.exp() + t
            logdet = logdet + s.flatten(1).sum(-1)
        return d, v, logdet

    def inverse_map(self, c, d, v):
        """(δ, v) → base (δ₀, v₀); returns (δ₀, v₀, log|det ∂(δ₀,v₀)/∂(δ,v)|)."""
        cc, dist2 = self._geometry(c)
        logdet = torch.zeros(len(c), dtype=c.dtype, device=c.device)
        for fy, fv in zip(reversed(self.cond_y), reversed(self.cond_v)):
            s, t = fv(cc, dist2, d)
            v = (v - t) * (-s).exp()
            logdet = logdet - s.flatten(1).sum(-1)
            s, t = fy(cc, dist2, v)
            d = (d - t) * (-s).exp()
            logdet = logdet - s.flatten(1).sum(-1)
        return d, v, logdet

    def log_prob(self, y, v, c):
        """log q(y, v | c), differentiable in y, v and the parameters."""
        d0, v0, logdet = self.inverse_map(c, y - c, v)
        return self._base_log_prob(d0, v0) + logdet

    @torch.no_grad()
    def sample(self, c, generator: torch.Generator | None = None):
        """Draw (y, v) ~ q(·, · | c)."""
        noise = lambda: torch.randn(c.shape, dtype=c.dtype, device=c.device, generator=generator)  # noqa: E731
        d0 = noise() * self.log_std_y.exp()
        v0 = noise() * self.log_std_v.exp()
        d, v, _ = self.forward_map(c, d0, v0)
        return c + d, v


def random_rotations(n: int, dtype=torch.float32, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` rotation matrices drawn uniformly (Haar) from SO(3): QR of a Gaussian matrix, signs fixed."""
    a = torch.randn(n, 3, 3, dtype=dtype, generator=generator).to(device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det[:, None]  # reflections → rotations, still Haar on SO(3)
    return q


class CouplingFlowKernel:
    """Reverse-noise kernel with a :class:`CouplingFlow`: c = x + σε, (y, v) ~ q(·|c), label = y block.

    label = k_BT ∇_y log q(y, v | c) at fixed c and v (kcal/mol/Å); v and its score are dropped.
    ``noise_std`` (Å) must be the σ the flow was trained with.
    """

    def __init__(self, flow: CouplingFlow, noise_std: float, kbt: float):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be a positive standard deviation in Å, got {noise_std!r}")
        if not kbt > 0:
            raise ValueError(f"kbt must be positive (kcal/mol), got {kbt!r}")
        self.flow, self.noise_std, self.kbt = flow, float(noise_std), float(kbt)

    def sample_with_forces(self, x: torch.Tensor, generator: torch.Generator | None = None):
        c = x + self.noise_std * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        y, v = self.flow.sample(c, generator=generator)
        y = y.detach().requires_grad_(True)
        with torch.enable_grad():
            (score,) = torch.autograd.grad(self.flow.log_prob(y, v, c).sum(), y)
        return y.detach(), self.kbt * score
