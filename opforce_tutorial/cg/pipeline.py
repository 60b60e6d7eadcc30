"""One label source to one CG model and its simulation: priors → force matching → Langevin.

Every label source (reference forces, noise kernel, coupling-flow kernel, CNF kernel) goes through the
same function with the same :class:`CGRunSettings`, so differences between the resulting models come
from the labels alone. The priors are fitted to the positions the labels sit at (the kernel outputs y
for a kernel, the frames themselves for reference forces): those positions are samples of the density
whose mean force the labels target, so the prior starts the model at that density's Boltzmann-inverted
marginals and the network learns the coupling between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..simulation import simulate_langevin
from .network import CGModel, NetworkEnsemble, SchNetConfig
from .priors import PriorFit, fit_priors
from .training import ForceMatchingSettings, held_out_force_mse, train_cg_model


@dataclass
class CGRunSettings:
    """Prior, network sizes, force-matching budget and the CG simulation (dt in ps, friction in 1/ps)."""

    repulsion_min_separation: int = 2  # PriorEnergy: the repelled pairs are ≥ this far apart along the chain
    hidden: int = 64
    n_interactions: int = 2
    n_rbf: int = 32
    cutoff: float = 12.0
    dihedral_hidden: int = 0  # SchNetConfig.dihedral_hidden: 0 = distances only (blind to mirror images)
    clamp_to_training: bool = True  # SchNetConfig.clamp_to_training: no network energy beyond the training distances
    force_matching: ForceMatchingSettings = field(default_factory=ForceMatchingSettings)
    n_replicas: int = 64
    n_steps: int = 20_000
    dt: float = 0.002
    friction: float = 1.0
    save_every: int = 50
    burn_in: int = 1000
    seed: int = 0

    def schnet_config(self, bead_types: list[int]) -> SchNetConfig:
        """The network these settings train, for beads of ``bead_types``."""
        return SchNetConfig(bead_types=bead_types, hidden=self.hidden, n_interactions=self.n_interactions,
                            n_rbf=self.n_rbf, cutoff=self.cutoff, dihedral_hidden=self.dihedral_hidden,
                            clamp_to_training=self.clamp_to_training)


@dataclass
class CGRun:
    """A trained CG model, its prior fits and training history, and its saved trajectory (time, replicas, beads, 3)."""

    model: CGModel
    prior_fits: list[PriorFit]
    history: dict
    trajectory: np.ndarray | None


#: Member m > 0 of an ensemble trains with force-matching seed ``seed + MEMBER_SEED_STRIDE · m`` (member 0 is the
#: single network of the same seed; the stride keeps members apart from the replicates' seeds 1, 2, …).
MEMBER_SEED_STRIDE = 1000


def fit_cg_model(positions, labels, kbt: float, bead_types: list[int], settings: CGRunSettings = CGRunSettings(),
                 val_mask=None, device="cpu", checkpoint: str | None = None, progress: bool = True,
                 n_members: int = 1):
    """Fit priors to ``positions`` and train the network on ``labels`` minus the prior forces; with
    ``n_members`` > 1, that many networks from different seeds (:data:`MEMBER_SEED_STRIDE`), averaged
    (:class:`~.network.NetworkEnsemble`), each checkpointed on its own (``<checkpoint>.member<m>``).

    Returns ``(CGModel, prior fits, history)``; see :func:`~.training.train_cg_model`. An ensemble's history
    holds its members' (``members``) and the ensemble's own held-out force error (``val_loss``, one value),
    its ``best_step`` and ``step`` the latest of its members'.
    """
    if n_members < 1:
        raise ValueError(f"n_members must be at least 1, got {n_members}")
    prior, fits = fit_priors(positions, kbt, repulsion_min_separation=settings.repulsion_min_separation)
    config = settings.schnet_config(bead_types)
    fm = settings.force_matching
    runs = [train_cg_model(positions, labels, prior, config, replace(fm, seed=fm.seed + MEMBER_SEED_STRIDE * m),
                           val_mask, device, checkpoint if m == 0 or checkpoint is None else f"{checkpoint}.member{m}",
                           progress) for m in range(n_members)]
    if n_members == 1:
        model, history = runs[0]
        return model, fits, history
    model = CGModel(runs[0][0].prior, NetworkEnsemble([m.net for m, _ in runs])).eval()
    histories = [h for _, h in runs]
    history = {"members": histories, "val_loss": [held_out_force_mse(model, positions, labels, val_mask)],
               "best_step": max(h["best_step"] for h in histories), "step": [max(h["step"][-1] for h in histories)]}
    return model, fits, history


def replica_starts(start_frames, settings: CGRunSettings) -> np.ndarray:
    """The ``settings.n_replicas`` frames (drawn with replacement, seeded by ``settings.seed``) that
    :func:`simulate_cg` starts its replicas from."""
    start_frames = np.asarray(start_frames)
    return start_frames[np.random.default_rng(settings.seed).choice(len(start_frames), settings.n_replicas)]


def simulate_cg(model: CGModel, start_frames, kbt: float, masses, settings: CGRunSettings = CGRunSettings(),
                device="cpu", progress: bool = True, checkpoint: str | None = None) -> np.ndarray:
    """BAOAB simulation of ``model`` from ``settings.n_replicas`` frames drawn (seeded) from ``start_frames``.

    Returns the saved frames (n_saved, n_replicas, beads, 3) in Å as float32. With ``checkpoint`` the
    simulation resumes after a kill (:func:`~opforce_tutorial.simulation.simulate_langevin`).
    """
    starts = torch.as_tensor(replica_starts(start_frames, settings), dtype=torch.float32, device=device)
    model = model.float().to(device)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    traj = simulate_langevin(model.forces, starts, masses=torch.as_tensor(masses, dtype=torch.float32), kbt=kbt,
                             dt=settings.dt, friction=settings.friction, n_steps=settings.n_steps,
                             save_every=settings.save_every, burn_in=settings.burn_in, generator=gen, progress=progress,
                             checkpoint=checkpoint)
    return traj.cpu().numpy().astype(np.float32)


def run_label_source(positions, labels, kbt: float, bead_types: list[int], masses, start_frames,
                     settings: CGRunSettings = CGRunSettings(), val_mask=None, device="cpu",
                     checkpoint: str | None = None, progress: bool = True, n_members: int = 1) -> CGRun:
    """:func:`fit_cg_model` (``n_members`` networks) then :func:`simulate_cg`: the whole path from one label
    source to CG samples (with ``checkpoint``, both the force matching and the simulation resume after a kill)."""
    model, fits, history = fit_cg_model(positions, labels, kbt, bead_types, settings, val_mask, device, checkpoint,
                                        progress, n_members)
    sim_checkpoint = None if checkpoint is None else f"{checkpoint}.simulation"
    return CGRun(model, fits, history, simulate_cg(model, start_frames, kbt, masses, settings, device, progress,
                                                   sim_checkpoint))
