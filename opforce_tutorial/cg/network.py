r"""A SchNet-like energy on bead distances, and the CG model = prior + network.

Network (after Schütt et al. 2018). Every ordered bead pair (i ≠ j) with distance d_ij (Å) gets radial
features e_k(d_ij) = exp(−(d_ij − μ_k)² / 2w²), with ``n_rbf`` centres μ_k evenly spaced on
[0, ``cutoff``] and w their spacing, times the smooth cutoff f(d) = ½(cos(π d / d_c) + 1) for d < d_c
(0 beyond). Bead features start as a learned embedding of the bead type, h_i⁰ = E[type_i]; each of
``n_interactions`` blocks applies a continuous-filter convolution

.. math::  h_i ← h_i + \mathrm{MLP}\Big(\sum_{j \ne i} W(e(d_{ij}))\, f(d_{ij}) ⊙ \mathrm{Lin}(h_j)\Big),

with W a two-layer filter network. The energy (kcal/mol) is Σ_i MLP(h_i). It depends on distances only,
so it is invariant to rotations, translations and (for equal types) permutations, and its forces have
zero net sum.

Distances are also blind to mirror images: a configuration and its reflection have the same distances,
and the reflection flips the sign of every dihedral. A distance-only network therefore gives
(φ, ψ) and (−φ, −ψ) the same energy; for alanine dipeptide's 5-bead map it cannot tell αR
(φ ≈ −60°, ψ ≈ −45°) from its mirror in αL, and only the prior's sin terms (one dihedral at a time)
carry the molecule's chirality. With ``dihedral_hidden > 0`` the energy gains a term on the signed
chain dihedrals θ_d (beads d … d+3),

.. math::  E_\mathrm{dih} = \mathrm{MLP}\bigl(\cos θ_1, \sin θ_1, …, \cos θ_D, \sin θ_D\bigr),

which can learn the joint, chiral part of the free energy (CGnet's dihedral features serve the same end).
It keeps the rotation and translation invariance, not the reflection invariance.

Where it saw no data, a network extrapolates: force matching fixes its gradient on the training positions
only, and a distance the training never reached (a bond squeezed to 0.6 Å) can carry an energy hole deeper
than the prior's wall. With ``clamp_to_training`` every pair distance is clamped to the range the training
positions cover (their 0.1 % and 99.9 % quantiles, :meth:`SchNetEnergy.set_distance_range`) before it enters
the network, so beyond that range the network's energy is flat along it and the prior alone acts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..forcefield import EnergyModel
from ..geometry import chain_indices, dihedral_angles


@dataclass
class SchNetConfig:
    """Sizes of :class:`SchNetEnergy` (cutoff in Å); the defaults train on a CPU in minutes for 5 beads."""

    bead_types: list[int]
    hidden: int = 64
    n_interactions: int = 2
    n_rbf: int = 32
    cutoff: float = 12.0
    dihedral_hidden: int = 0  # width of the MLP on (cos, sin) of the chain dihedrals; 0: distances only
    clamp_to_training: bool = False  # clamp each distance to the training positions' range (module docstring)


class _Interaction(nn.Module):
    def __init__(self, hidden: int, n_rbf: int):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(n_rbf, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.lin = nn.Linear(hidden, hidden, bias=False)
        self.update = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, rbf, envelope, i, j):
        msg = self.filter(rbf) * envelope[..., None] * self.lin(h)[..., j, :]  # (B, P, hidden)
        agg = torch.zeros_like(h).index_add_(-2, i, msg)
        return h + self.update(agg)


class SchNetEnergy(EnergyModel):
    """Learned CG energy on bead distances (see module docstring); frames (B, N, 3) in Å."""

    def __init__(self, config: SchNetConfig):
        super().__init__()
        self.config = config
        n = len(config.bead_types)
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        off = i != j
        self.register_buffer("i", i[off])
        self.register_buffer("j", j[off])
        self.register_buffer("types", torch.tensor(config.bead_types, dtype=torch.long))
        self.register_buffer("mu", torch.linspace(0.0, config.cutoff, config.n_rbf))
        if config.clamp_to_training:  # set from the training positions by set_distance_range
            self.register_buffer("d_lo", torch.zeros(len(self.i)))
            self.register_buffer("d_hi", torch.full((len(self.i),), math.inf))
        self.width = config.cutoff / (config.n_rbf - 1)
        self.embed = nn.Embedding(max(config.bead_types) + 1, config.hidden)
        self.interactions = nn.ModuleList(_Interaction(config.hidden, config.n_rbf) for _ in range(config.n_interactions))
        self.readout = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1))
        if config.dihedral_hidden:
            if n < 4:
                raise ValueError(f"dihedral features need at least 4 beads, got {n}")
            self.register_buffer("quads", chain_indices(n, 4))
            width = config.dihedral_hidden
            self.dihedral_mlp = nn.Sequential(nn.Linear(2 * len(self.quads), width), nn.SiLU(),
                                              nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def set_distance_range(self, positions: torch.Tensor, quantile: float = 1e-3) -> None:
        """Clamp range of every pair: the ``quantile`` and 1 − ``quantile`` quantiles of its distance over
        ``positions`` (frames, beads, 3) in Å (needs ``clamp_to_training``)."""
        if not self.config.clamp_to_training:
            raise ValueError("set_distance_range needs a SchNetConfig with clamp_to_training=True")
        x = torch.as_tensor(positions, dtype=torch.float64)
        d = (x[:, self.j.cpu()] - x[:, self.i.cpu()]).norm(dim=-1)
        q = torch.quantile(d[torch.randperm(len(d), generator=torch.Generator().manual_seed(0))[:100_000]],
                           torch.tensor([quantile, 1 - quantile], dtype=torch.float64), dim=0)
        self.d_lo.copy_(q[0]), self.d_hi.copy_(q[1])

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[..., self.j, :] - x[..., self.i, :]).norm(dim=-1)  # (B, P), no self-pairs
        if self.config.clamp_to_training:
            d = torch.minimum(torch.maximum(d, self.d_lo.to(x.dtype)), self.d_hi.to(x.dtype))
        rbf = torch.exp(-0.5 * ((d[..., None] - self.mu.to(x.dtype)) / self.width) ** 2)
        envelope = 0.5 * (torch.cos(math.pi * d / self.config.cutoff) + 1.0) * (d < self.config.cutoff)
        h = self.embed(self.types).to(x.dtype).expand(*x.shape[:-2], -1, -1)
        for block in self.interactions:
            h = block(h, rbf, envelope, self.i, self.j)
        e = self.readout(h).squeeze(-1).sum(-1)
        if self.config.dihedral_hidden:
            theta = dihedral_angles(x, self.quads)
            e = e + self.dihedral_mlp(torch.cat([torch.cos(theta), torch.sin(theta)], -1)).squeeze(-1)
        return e


class NetworkEnsemble(EnergyModel):
    r"""The mean energy of networks fitted to the same labels from different seeds,

    .. math::  E(x) = \frac1K \sum_{m=1}^{K} E_m(x),

    so its forces are the members' mean forces. Force matching fixes a network's mean force only where the
    labels are dense; where they are sparse (the barriers between basins) each fit lands elsewhere, and
    the balance of the basins with it. Members that err independently there average down as 1/√K. The
    members share one :class:`SchNetConfig` (:attr:`config`)."""

    def __init__(self, members: list[SchNetEnergy]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two networks, got {len(members)}")
        if any(m.config != members[0].config for m in members):
            raise ValueError("the networks of an ensemble must share one SchNetConfig")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.energy(x) for m in self.members]).mean(0)


class CGModel(EnergyModel):
    """CG energy = fixed prior + learned network; forces = −∇ energy (kcal/mol/Å)."""

    def __init__(self, prior: EnergyModel, net: SchNetEnergy | NetworkEnsemble):
        super().__init__()
        self.prior, self.net = prior, net

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.energy(x) + self.net.energy(x)
