r"""Force matching of the CG network on labelled positions, with a fixed prior.

With a fitted prior E_prior, the network learns the residual force:

.. math::  L(θ) = \frac{1}{3 N_\mathrm{beads}} \big\langle \big| f − F_\mathrm{prior}(y) − F_θ(y) \big|^2 \big\rangle_{(y, f)},

over labelled pairs (y, f) from any label source (reference forces, or a kernel's outputs y with its
labels f; never the original frames with kernel labels). The minimiser is the mean force of the density
the y were drawn from. Adam, a validation split that is the same for every label source
(:func:`validation_mask`), early stopping on the validation loss, checkpoint/resume, a progress bar,
CPU or CUDA, and deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..kernels.training import fingerprint, optimise
from .network import CGModel, SchNetConfig, SchNetEnergy


@dataclass
class ForceMatchingSettings:
    """Optimiser settings (forces in kcal/mol/Å); ``patience`` counts validations without improvement.
    ``lr_final``: anneal the learning rate from ``lr`` to it over ``n_steps`` on a cosine
    (:func:`~opforce_tutorial.kernels.training.cosine_lr`); None keeps ``lr`` throughout."""

    n_steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    eval_every: int = 100
    checkpoint_every: int = 500
    patience: int | None = 10
    seed: int = 0
    lr_final: float | None = None

    def __post_init__(self):
        if self.lr_final is not None and not 0 <= self.lr_final <= self.lr:
            raise ValueError(f"lr_final must be in [0, lr = {self.lr:g}], got {self.lr_final:g}")


def validation_mask(frame_index, n_frames: int, val_fraction: float = 0.1, traj_ids=None) -> np.ndarray:
    """Which labelled samples are for validation, decided by their source frame only.

    The final ``val_fraction`` in time of every trajectory is held out (contiguous blocks, so correlated
    neighbours of the training frames are not used to validate, and every trajectory, with whatever
    basins it visits, contributes to both sides). ``traj_ids`` (one per frame; default: one trajectory)
    must keep each trajectory's frames contiguous and in time order, as the datasets do. Every label
    source made from the same frames gets the same split.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    traj_ids = np.zeros(n_frames, dtype=int) if traj_ids is None else np.asarray(traj_ids)
    if len(traj_ids) != n_frames:
        raise ValueError(f"{len(traj_ids)} trajectory ids for {n_frames} frames")
    ids, first, counts = np.unique(traj_ids, return_index=True, return_counts=True)
    if np.count_nonzero(np.diff(traj_ids)) != len(ids) - 1:
        raise ValueError("every trajectory's frames must be contiguous (in time order)")
    k = np.searchsorted(ids, traj_ids)
    in_trajectory = np.arange(n_frames) - first[k]
    held_out = in_trajectory >= np.round((1 - val_fraction) * counts).astype(int)[k]
    return held_out[np.asarray(frame_index)]


VAL_SAMPLES = 4096  # a fit validates on the first this many held-out samples


def _val_mask(n: int, val_mask=None) -> np.ndarray:
    """The held-out samples of ``n``: ``val_mask``, default the last 10 %."""
    return np.arange(n) >= int(0.9 * n) if val_mask is None else np.asarray(val_mask, dtype=bool)


def held_out_force_mse(model: CGModel, positions, labels, val_mask=None) -> float:
    """Mean squared force error (kcal²/mol²/Å²) of ``model`` on the held-out samples :func:`train_cg_model`
    validates on (the first :data:`VAL_SAMPLES` of ``val_mask``, default the last 10 %)."""
    idx = np.flatnonzero(_val_mask(len(positions), val_mask))[:VAL_SAMPLES]
    x = torch.as_tensor(np.asarray(positions)[idx], dtype=torch.float32)
    f = torch.as_tensor(np.asarray(labels)[idx], dtype=torch.float32)
    return float(((model.float().forces_in_batches(x) - f) ** 2).mean())


def train_cg_model(positions, labels, prior, config: SchNetConfig, settings: ForceMatchingSettings = ForceMatchingSettings(),
                   val_mask=None, device: str | torch.device = "cpu", checkpoint: str | None = None,
                   progress: bool = True) -> tuple[CGModel, dict]:
    """Train a :class:`SchNetEnergy` on (positions, labels) minus the prior's forces; returns ``(CGModel, history)``.

    ``positions`` and ``labels`` are (n, beads, 3) in Å and kcal/mol/Å; ``val_mask`` (n,) marks the
    validation samples (default: the last 10 % of the samples). ``history["val_loss"]`` is the mean squared
    force error (kcal²/mol²/Å²) of the validation samples.
    """
    x = torch.as_tensor(np.asarray(positions), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if x.shape != f.shape or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions {tuple(x.shape)} and labels {tuple(f.shape)} must both be (n, beads, 3)")
    if not (torch.isfinite(x).all() and torch.isfinite(f).all()):
        raise ValueError("non-finite positions or labels: drop them first (kernels.keep_finite)")
    if len(config.bead_types) != x.shape[1]:
        raise ValueError(f"config has {len(config.bead_types)} bead types for {x.shape[1]}-bead frames")
    val_mask = _val_mask(len(x), val_mask)
    if val_mask.all() or not val_mask.any():
        raise ValueError("val_mask must select some but not all samples")
    prior = prior.float().to(device)
    residual = f - prior.forces_in_batches(x, device=device)
    train_idx = torch.as_tensor(np.flatnonzero(~val_mask))
    val_idx = torch.as_tensor(np.flatnonzero(val_mask))[:VAL_SAMPLES]
    val_batch = (x[val_idx].to(device), residual[val_idx].to(device))
    gen = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)  # deterministic initialisation
    net = SchNetEnergy(config)
    if config.clamp_to_training:
        net.set_distance_range(x)
    net = net.to(device)

    def force_loss(model, batch):
        xb, target = batch
        return ((model.forces(xb, create_graph=torch.is_grad_enabled()) - target) ** 2).mean()

    def make_batch():
        idx = train_idx[torch.randint(len(train_idx), (settings.batch_size,), generator=gen)]
        return x[idx].to(device), residual[idx].to(device)

    history = optimise(net, force_loss, make_batch, val_batch, settings, gen, device, checkpoint,
                       "force matching (CG network)", progress,
                       made_by=fingerprint(settings, net, x.cpu().numpy(), residual.cpu().numpy(), val_mask))
    return CGModel(prior, net.eval()).eval(), history
