"""Timewarp-style conditional coupling flow q(y, v | c) over CG frames, with auxiliary variables.

Variables (frames of N beads, Å): the conditioning frame c (a noised copy of the data), the modelled
displacement δ = y − c, and auxiliary "velocities" v ∈ R^{N×3}.

Centre of mass. The noise is mean-free (c = x + σ Pε with P removing the mean over beads, as for every
kernel of this package), so δ is mean-free, and the flow models its N − 1 internal coordinates
δ̃ = Qᵀδ, with Q an orthonormal (Helmert) basis of the mean-free subspace: q is a density on that
subspace, y has the centre of mass of c, and the labels ∇_y log q = Q ∇_δ̃ log q have zero net force.
(Modelling the centre of mass as well would force each bead's single scale to compromise between the
noise-only centre-of-mass variance and the smaller internal posterior variance, which biases the
internal labels; measured on a two-bead Gaussian toy: label slope 0.77 instead of 1.)

The base is N(δ̃₀; 0, σ_δ² I) N(v₀; 0, σ_v² I) with learnable σ_δ, σ_v. Each of the
``n_coupling_layers`` blocks applies two affine couplings with per-Cartesian-dimension scales:

.. math::

    δ̃ ← δ̃ ⊙ e^{Qᵀs_δ(c, v)} + Qᵀt_δ(c, v), \\qquad v ← v ⊙ e^{s_v(c, Qδ̃)} + t_v(c, Qδ̃),

where the conditioners give per-bead outputs (N×3) that Qᵀ maps to internal coordinates. The Jacobian
is triangular and log q(δ̃, v | c) = log N(δ̃₀) + log N(v₀) − Σ (log-scales) over all layers, with
(δ̃₀, v₀) obtained by running the blocks backwards. Scales are bounded, s = s_max tanh(·).

Bond coordinates (``coordinates="bonds"``). A stiff bond's denoising posterior is narrow along the bond
and broad across it, and the bond's direction changes from frame to frame, so per-Cartesian-axis
scales of Helmert coordinates can only approximate it through many layers. With bond coordinates the
couplings act on b̂_k = F_k(c)(δ_{k+1} − δ_k), the k-th bond's displacement in an orthonormal frame F_k
of c's k-th bond (:func:`bond_frames`): one scale per bond and frame axis contracts the length and
leaves the bending broad. The map from Helmert coordinates is linear with a constant Jacobian
(the frames are rotations fixed by c), so labels are unaffected by it and log q adds its constant.

Correlated displacements (``affine="triangular"``). A diagonal scale cannot shrink a combination of
coordinates (an angle moves two bonds at once) while leaving others broad; the exact denoising posterior
of a harmonic system is a Gaussian with a full covariance. Then each position coupling is
δ̃ ← L δ̃ + t with L = diag(e^s) + M, M strictly lower-triangular over all 3(N − 1) internal coordinates
(from the conditioner's bead-averaged features, bounded by tanh), so log|det L| = Σ s still, and the
inverse is a triangular solve.

Each s and t comes from a conditioner: per-bead input = bead-type embedding + MLP([c − c̄, u]) with u
the untransformed variable, then transformer blocks whose attention weights are Gaussian RBFs of the
conditioning positions' pairwise distances, softmax_j(−|c_i − c_j|²/2ℓ_h²), one lengthscale ℓ_h per
head (the attention is fixed by c and does not depend on the transformed variable), then an output
MLP. The flow is not rotation-equivariant; train it with a random rotation per sample
(:func:`random_rotations`).

Kernel labels: the flow is a :class:`~opforce_tutorial.kernels.reverse.ConditionalDensity` with the
auxiliaries v, so :class:`~opforce_tutorial.kernels.reverse.ReverseNoiseKernel` (``mean_free=True``)
labels with the y block of k_BT ∇_(y,v) log q(y, v | c) at fixed c and v; its expectation over v
given y is the marginal score, and the v block is discarded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import remove_mean
from .training import train_on_frames

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class CouplingFlowConfig:
    """Architecture of :class:`CouplingFlow` (lengths in Å). Defaults follow the authors' reference implementation for chignolin."""

    bead_types: list[int]
    n_coupling_layers: int = 8
    n_transformer_layers: int = 3
    d_model: int = 128
    lengthscales: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0, 5.0])
    d_ff: int = 2048
    max_log_scale: float = 2.0
    #: Internal coordinates the affine couplings scale: "helmert" (an orthonormal basis of the mean-free
    #: subspace, the authors' choice) or "bonds" (each bond's displacement in a frame of c's bond).
    coordinates: str = "helmert"
    #: The position couplings' linear part: "diagonal" (one scale per coordinate, the authors' choice) or
    #: "triangular" (a lower-triangular matrix over all internal coordinates: correlated displacements).
    affine: str = "diagonal"
    #: Give the conditioners each bead's bond lengths and bond-angle cosine in c (rotation-invariant
    #: inputs beside the centred positions), from which denoising shifts of bonds and angles follow directly.
    invariant_features: bool = False
    #: Initial width (Å) of the base density of the displacement y − c (learned from there): of the order
    #: of the noise σ, whose posterior the flow models.
    initial_std: float = 0.05

    def __post_init__(self):
        if not self.initial_std > 0:
            raise ValueError(f"initial_std must be a positive width in Å, got {self.initial_std!r}")
        if not self.lengthscales or min(self.lengthscales) <= 0:
            raise ValueError(f"need at least one positive lengthscale (Å), got {self.lengthscales}")
        if self.coordinates not in ("helmert", "bonds"):
            raise ValueError(f"coordinates must be 'helmert' or 'bonds', got {self.coordinates!r}")
        if self.coordinates == "bonds" and len(self.bead_types) < 3:
            raise ValueError("bond frames need a chain of at least 3 beads")
        if self.affine not in ("diagonal", "triangular"):
            raise ValueError(f"affine must be 'diagonal' or 'triangular', got {self.affine!r}")


#: A CPU-sized coupling flow (the book's chapter 2, ``opforce train-kernel --size small``).
SMALL_COUPLING = dict(n_coupling_layers=4, n_transformer_layers=1, d_model=64, d_ff=256)


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
    """(c, u) ↦ (s, t), each (B, N, 3), and with ``n_mix`` > 0 also m (B, n_mix) from the bead-averaged features."""

    def __init__(self, cfg: CouplingFlowConfig, n_mix: int = 0):
        super().__init__()
        n_types = max(cfg.bead_types) + 1
        self.register_buffer("types", torch.tensor(cfg.bead_types, dtype=torch.long))
        self.embed = nn.Embedding(n_types, cfg.d_model)
        n_in = 6 + (3 if cfg.invariant_features else 0)  # c − c̄ (+ invariants) and the untransformed variable
        self.inp = nn.Sequential(nn.Linear(n_in, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.blocks = nn.ModuleList(RBFAttentionBlock(cfg.d_model, cfg.lengthscales, cfg.d_ff)
                                    for _ in range(cfg.n_transformer_layers))
        self.outp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, 6))
        nn.init.zeros_(self.outp[-1].weight)  # start as the identity map
        nn.init.zeros_(self.outp[-1].bias)
        self.mix = nn.Linear(cfg.d_model, n_mix) if n_mix else None
        if self.mix is not None:
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)
        self.max_log_scale = cfg.max_log_scale

    def forward(self, c_centred, dist2, u):
        h = self.inp(torch.cat([c_centred, u], dim=-1)) + self.embed(self.types)
        for block in self.blocks:
            h = block(h, dist2)
        s, t = self.outp(h).chunk(2, dim=-1)
        s = self.max_log_scale * torch.tanh(s / self.max_log_scale)
        if self.mix is None:
            return s, t
        return s, t, torch.tanh(self.mix(h.mean(dim=1)))


def helmert_basis(n: int) -> torch.Tensor:
    """(n, n−1) orthonormal basis of the vectors with zero mean (columns of the Helmert matrix)."""
    if n < 2:
        raise ValueError("a mean-free subspace needs at least 2 beads")
    q = torch.zeros(n, n - 1, dtype=torch.float64)
    for k in range(1, n):
        q[:k, k - 1] = 1.0 / math.sqrt(k * (k + 1))
        q[k, k - 1] = -k / math.sqrt(k * (k + 1))
    return q


def bead_invariants(c: torch.Tensor) -> torch.Tensor:
    """Per bead of chains c (B, N, 3): length of the bond before it, of the bond after it, and the cosine
    of the bond angle at it (0 where a bead has no such bond or angle). (B, N, 3)."""
    b = c[:, 1:] - c[:, :-1]
    length = b.norm(dim=-1)
    zero = torch.zeros_like(length[:, :1])
    cos = (-(b[:, :-1] * b[:, 1:]).sum(-1) / (length[:, :-1] * length[:, 1:]))
    return torch.stack([torch.cat([zero, length], 1), torch.cat([length, zero], 1),
                        torch.cat([zero, cos, zero], 1)], dim=-1)


def bond_frames(c: torch.Tensor) -> torch.Tensor:
    """Orthonormal frames of the N − 1 bonds of chains c (B, N, 3): (B, N − 1, 3, 3), rows e₁, e₂, e₃.

    e₁ along bond k (c_{k+1} − c_k), e₂ the part of the next bond (the previous one for the last bond)
    orthogonal to e₁, e₃ = e₁ × e₂. They rotate with c, so a scale per frame axis can contract a bond's
    length (e₁) while leaving its bending directions (e₂, e₃) broad, whatever the bond's orientation.
    """
    b = c[:, 1:] - c[:, :-1]
    e1 = b / b.norm(dim=-1, keepdim=True)
    other = torch.cat([b[:, 1:], b[:, -2:-1]], dim=1)
    w = other - (other * e1).sum(-1, keepdim=True) * e1
    e2 = w / w.norm(dim=-1, keepdim=True)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-2)


class CouplingFlow(nn.Module):
    """q(y, v | c) (see module docstring). Frames are (B, N, 3) in Å."""

    def __init__(self, config: CouplingFlowConfig):
        super().__init__()
        self.config = config
        self.n_beads = len(config.bead_types)
        self.register_buffer("basis", helmert_basis(self.n_beads).float())
        # bond coordinates: log |det| of the map from the Helmert coordinates to bond differences (3 axes)
        diff = torch.eye(self.n_beads, dtype=torch.float64)[1:] - torch.eye(self.n_beads, dtype=torch.float64)[:-1]
        self.bond_log_jacobian = 3 * float(torch.linalg.slogdet(diff @ helmert_basis(self.n_beads))[1])
        n_internal = 3 * (self.n_beads - 1)
        n_mix = n_internal * (n_internal - 1) // 2 if config.affine == "triangular" else 0
        self.register_buffer("_lower", torch.tril_indices(n_internal, n_internal, -1), persistent=False)
        self.cond_y = nn.ModuleList(Conditioner(config, n_mix) for _ in range(config.n_coupling_layers))
        self.cond_v = nn.ModuleList(Conditioner(config) for _ in range(config.n_coupling_layers))
        self.log_std_y = nn.Parameter(torch.tensor(math.log(config.initial_std)))
        self.log_std_v = nn.Parameter(torch.tensor(0.0))

    def _geometry(self, c):
        """The conditioners' view of c: centred positions (with their invariants) and squared distances."""
        cc = c - c.mean(dim=1, keepdim=True)
        dist2 = torch.cdist(cc, cc) ** 2
        if self.config.invariant_features:
            cc = torch.cat([cc, bead_invariants(c)], dim=-1)
        return cc, dist2

    def _base_log_prob(self, d0, v0):
        def log_normal(z, log_std):
            return (-0.5 * (z / log_std.exp()) ** 2 - log_std - 0.5 * _LOG_2PI).flatten(1).sum(-1)

        return log_normal(d0, self.log_std_y) + log_normal(v0, self.log_std_v)

    def to_internal(self, d, c=None):
        """Mean-free displacements (B, N, 3) → internal coordinates (B, N−1, 3): Qᵀδ (Helmert), or each
        bond's displacement δ_{k+1} − δ_k in the frame of c's bond k (bonds; needs ``c``)."""
        if self.config.coordinates == "bonds":
            return torch.einsum("bkij,bkj->bki", bond_frames(c), d[:, 1:] - d[:, :-1])
        return torch.einsum("nk,bnd->bkd", self.basis.to(d.dtype), d)

    def from_internal(self, di, c=None):
        """Internal coordinates (B, N−1, 3) → mean-free displacements (B, N, 3); inverse of :meth:`to_internal`."""
        if self.config.coordinates == "bonds":
            b = torch.einsum("bkij,bki->bkj", bond_frames(c), di)
            d = torch.cat([torch.zeros_like(b[:, :1]), torch.cumsum(b, dim=1)], dim=1)
            return d - d.mean(dim=1, keepdim=True)
        return torch.einsum("nk,bkd->bnd", self.basis.to(di.dtype), di)

    def _internal_params(self, a):
        """A conditioner's per-bead output (B, N, 3) as a per-internal-coordinate scale or shift."""
        return a[:, 1:] if self.config.coordinates == "bonds" else self.to_internal(a)

    def _linear_part(self, s, m):
        """L = diag(e^s) + strictly-lower M over the flattened internal coordinates: (B, D, D)."""
        lin = torch.diag_embed(s.flatten(1).exp())
        lin[:, self._lower[0], self._lower[1]] = m
        return lin

    def _position_coupling(self, fy, cc, dist2, v, d, inverse: bool):
        """δ̃ ← L δ̃ + t (or its inverse), L and t given (c, v); returns (δ̃, log|det| of the step)."""
        out = fy(cc, dist2, v)
        s, t = (self._internal_params(a) for a in out[:2])
        if self.config.affine == "diagonal":
            d = (d - t) * (-s).exp() if inverse else d * s.exp() + t
        else:
            lin = self._linear_part(s, out[2])
            flat = d.flatten(1)
            if inverse:
                flat = torch.linalg.solve_triangular(lin, (flat - t.flatten(1))[..., None], upper=False)[..., 0]
            else:
                flat = (lin @ flat[..., None])[..., 0] + t.flatten(1)
            d = flat.view_as(d)
        logdet = s.flatten(1).sum(-1)
        return d, -logdet if inverse else logdet

    def forward_map(self, c, d0, v0):
        """Base (δ̃₀, v₀) → (δ̃, v); returns (δ̃, v, log|det ∂(δ̃,v)/∂(δ̃₀,v₀)|). δ̃ is (B, N−1, 3)."""
        cc, dist2 = self._geometry(c)
        d, v, logdet = d0, v0, torch.zeros(len(c), dtype=c.dtype, device=c.device)
        for fy, fv in zip(self.cond_y, self.cond_v):
            d, step = self._position_coupling(fy, cc, dist2, v, d, inverse=False)
            logdet = logdet + step
            s, t = fv(cc, dist2, self.from_internal(d, c))
            v = v * s.exp() + t
            logdet = logdet + s.flatten(1).sum(-1)
        return d, v, logdet

    def inverse_map(self, c, d, v):
        """(δ̃, v) → base (δ̃₀, v₀); returns (δ̃₀, v₀, log|det ∂(δ̃₀,v₀)/∂(δ̃,v)|)."""
        cc, dist2 = self._geometry(c)
        logdet = torch.zeros(len(c), dtype=c.dtype, device=c.device)
        for fy, fv in zip(reversed(self.cond_y), reversed(self.cond_v)):
            s, t = fv(cc, dist2, self.from_internal(d, c))
            v = (v - t) * (-s).exp()
            logdet = logdet - s.flatten(1).sum(-1)
            d, step = self._position_coupling(fy, cc, dist2, v, d, inverse=True)
            logdet = logdet + step
        return d, v, logdet

    def log_prob(self, y, c, v):
        """log q(y, v | c) on the mean-free subspace of y − c (density per unit volume of the Helmert
        coordinates, whichever internal coordinates the flow uses); differentiable in y, v and the parameters."""
        d0, v0, logdet = self.inverse_map(c, self.to_internal(y - c, c), v)
        constant = self.bond_log_jacobian if self.config.coordinates == "bonds" else 0.0
        return self._base_log_prob(d0, v0) + logdet + constant

    @torch.no_grad()
    def sample(self, c, generator: torch.Generator | None = None):
        """Draw (y, v) ~ q(·, · | c); y − c is mean-free."""
        b, n, _ = c.shape
        d0 = torch.randn(b, n - 1, 3, dtype=c.dtype, device=c.device, generator=generator) * self.log_std_y.exp()
        v0 = torch.randn(c.shape, dtype=c.dtype, device=c.device, generator=generator) * self.log_std_v.exp()
        d, v, _ = self.forward_map(c, d0, v0)
        return c + self.from_internal(d, c), v


def random_rotations(n: int, dtype=torch.float32, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` rotation matrices drawn uniformly (Haar) from SO(3): QR of a Gaussian matrix, signs fixed."""
    a = torch.randn(n, 3, 3, dtype=dtype, generator=generator).to(device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det[:, None]  # reflections → rotations, still Haar on SO(3)
    return q


@dataclass
class CouplingTraining:
    """Maximum-likelihood training settings (the authors' reference implementation: Adam, lr 5e-4, batch 512)."""

    noise_std: float
    n_steps: int = 20_000
    batch_size: int = 512
    lr: float = 5e-4
    val_fraction: float = 0.1
    eval_every: int = 500
    checkpoint_every: int = 1000
    random_rotation: bool = True
    seed: int = 0


def _training_batch(x, settings, gen, device):
    x = x.to(device)
    if settings.random_rotation:
        centred = x - x.mean(dim=1, keepdim=True)
        x = centred @ random_rotations(len(x), x.dtype, device, gen).transpose(1, 2)
    eps = torch.randn(x.shape, dtype=x.dtype, generator=gen).to(device)
    c = x + settings.noise_std * remove_mean(eps)
    v = torch.randn(x.shape, dtype=x.dtype, generator=gen).to(device)
    return x, v, c


def train_coupling_flow(positions: torch.Tensor, config: CouplingFlowConfig, settings: CouplingTraining,
                        device: str | torch.device = "cpu", checkpoint: str | None = None, progress: bool = True):
    """Fit q(y, v | c) by maximum likelihood on (c = R x + σPε, R x) pairs, v ~ N(0, I) auxiliary.

    ``positions`` (frames, beads, 3) in Å; R is a uniformly random rotation per sample (about the
    frame's centroid) when ``settings.random_rotation``. A random ``val_fraction`` of frames is held out;
    the validation NLL (nats per frame, fixed noise draws; ``history["val_loss"]``) is recorded every
    ``eval_every`` steps.
    With ``checkpoint`` set, the model, optimiser, step, RNG and history are saved there every
    ``checkpoint_every`` steps and an existing file is resumed. Returns ``(flow, history)``.
    """
    def nll(model, batch):
        x, v, c = batch
        return -model.log_prob(x, c, v).mean()

    return train_on_frames(positions, settings, lambda: CouplingFlow(config), _training_batch, nll, device, checkpoint,
                           "train coupling flow", progress)
