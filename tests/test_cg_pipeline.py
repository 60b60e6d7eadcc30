"""End-to-end smoke test on tiny data: labels → CG model → simulation → evaluators, for two label sources."""

import numpy as np
import torch

from opforce_tutorial.cg.pipeline import CGRunSettings, run_label_source
from opforce_tutorial.cg.training import ForceMatchingSettings, validation_mask
from opforce_tutorial.evaluation import evaluate, make_reference, state_populations
from opforce_tutorial.systems.alanine_dipeptide import SYSTEM, basins
from opforce_tutorial.kernels import NoiseKernel
from opforce_tutorial.labels import LabelSettings, label_frames

from chains import ala2_like, toy_prior

KBT = 0.596


def test_labels_to_cg_model_to_simulation_to_evaluation(tmp_path, device):
    rng = np.random.default_rng(0)
    frames = ala2_like(2000, rng)[0].astype(np.float32)
    forces = toy_prior(5).forces(torch.as_tensor(frames, dtype=torch.float64)).float().numpy()  # stand-in reference forces
    ref = make_reference(frames, SYSTEM.observables)
    labelled = label_frames(frames, NoiseKernel(0.05, KBT, mean_free=True), 300.0, tmp_path / "noise.npz",
                            LabelSettings(data_fraction=0.2, repeats=5, batch_size=500), device=device,
                            progress=False)
    settings = CGRunSettings(hidden=16, n_rbf=8, force_matching=ForceMatchingSettings(n_steps=60, batch_size=64,
                                                                                      eval_every=20),
                             n_replicas=8, n_steps=300, save_every=20, burn_in=100)
    masses = np.array([[12.0], [14.0], [12.0], [12.0], [14.0]])
    sources = {"reference": (frames, forces, np.arange(len(frames))),
               "noise": (labelled.positions, labelled.forces, labelled.frame_index)}
    for name, (y, f, idx) in sources.items():
        run = run_label_source(y, f, KBT, [0, 1, 2, 0, 1], masses, frames, settings,
                               val_mask=validation_mask(idx, len(frames)), device=device, progress=False)
        assert run.trajectory.shape == (10, 8, 5, 3) and np.isfinite(run.trajectory).all(), name
        assert len(run.history["val_loss"]) == 3 and np.isfinite(run.history["val_loss"]).all()
        scores = evaluate(run.trajectory, ref, SYSTEM.observables, floor_draws=3)
        assert all(0 <= s["js"] <= np.log(2) and s["n_samples"] == 80 for s in scores.values())
        pops = state_populations(run.trajectory, basins, n_blocks=4)
        assert abs(sum(p["mean"] for p in pops.values()) - 1) < 1e-9
        assert {f.term for f in run.prior_fits} == {"bond", "angle", "dihedral"}
