"""CG model: geometry, priors by Boltzmann inversion, the SchNet energy, force matching, evaluators."""


import numpy as np
import pytest
import torch

from opforce_tutorial.cg import (CGModel, ForceMatchingSettings, SchNetConfig, SchNetEnergy, fit_priors,
                                 train_cg_model, validation_mask)
from opforce_tutorial.geometry import bond_angles, chain_indices, dihedral_angles
from opforce_tutorial.kernels.coupling import random_rotations

from chains import chain_from_internal, sample_density, toy_prior

KBT = 0.596


def test_geometry_matches_a_hand_built_chain_and_has_finite_gradients():
    rng = np.random.default_rng(0)
    r = np.full((5, 3), 3.8)
    theta = np.full((5, 2), np.radians(100.0))
    phi = rng.uniform(-np.pi, np.pi, 5)
    x = torch.as_tensor(chain_from_internal(r, theta, phi)).requires_grad_(True)
    assert np.allclose(bond_angles(x, chain_indices(4, 3)).detach(), np.radians(100.0))
    assert np.allclose(dihedral_angles(x, chain_indices(4, 4))[:, 0].detach(), phi)
    (g,) = torch.autograd.grad(dihedral_angles(x, chain_indices(4, 4)).sum(), x)
    assert torch.isfinite(g).all()


def test_priors_recover_known_parameters_from_synthetic_data():
    rng = np.random.default_rng(1)
    n = 200_000
    kb, r0, ka, t0 = 80.0, 3.8, 40.0, np.radians(105.0)
    rgrid, tgrid, pgrid = np.linspace(3.0, 4.6, 20001), np.linspace(0.5, 2.6, 20001), np.linspace(-np.pi, np.pi, 20001)
    # p(r) ∝ r² exp(−U/kT) and p(θ) ∝ sin θ exp(−U/kT): the Jacobians Boltzmann inversion must undo
    r = np.stack([sample_density(lambda q: 2 * np.log(q) - 0.5 * kb * (q - r0) ** 2 / KBT, rgrid, n, rng)
                  for _ in range(3)], 1)
    theta = np.stack([sample_density(lambda q: np.log(np.sin(q)) - 0.5 * ka * (q - t0) ** 2 / KBT, tgrid, n, rng)
                      for _ in range(2)], 1)
    a1, b2 = 0.8, -0.5
    phi = sample_density(lambda q: -(a1 * np.cos(q) + b2 * np.sin(2 * q)) / KBT, pgrid, n, rng)
    prior, fits = fit_priors(chain_from_internal(r, theta, phi), KBT)
    assert torch.allclose(prior.bond_k, torch.full((3,), kb, dtype=torch.float64), rtol=0.05)
    assert torch.allclose(prior.bond_r0, torch.full((3,), r0, dtype=torch.float64), atol=2e-3)
    assert torch.allclose(prior.angle_k, torch.full((2,), ka, dtype=torch.float64), rtol=0.05)
    assert torch.allclose(prior.angle_theta0, torch.full((2,), t0, dtype=torch.float64), atol=3e-3)
    assert prior.dihedral_cos[0, 0] == pytest.approx(a1, abs=0.03)
    assert prior.dihedral_sin[0, 1] == pytest.approx(b2, abs=0.03)
    assert abs(float(prior.dihedral_cos[0, 1])) < 0.03 and abs(float(prior.dihedral_sin[0, 0])) < 0.03
    assert [f.term for f in fits] == ["bond"] * 3 + ["angle"] * 2 + ["dihedral"]
    assert prior.pairs.tolist() == [[0, 2], [0, 3], [1, 3]]  # every pair not bonded
    assert fit_priors(chain_from_internal(r, theta, phi), KBT, repulsion_min_separation=3)[0].pairs.tolist() == [[0, 3]]
    with pytest.raises(ValueError, match="frames, beads, 3"):
        fit_priors(np.zeros((100, 4)), KBT)
    with pytest.raises(ValueError, match="repulsion_min_separation must be ≥ 2"):
        fit_priors(chain_from_internal(r, theta, phi), KBT, repulsion_min_separation=1)


def test_the_1_3_repulsion_keeps_a_broad_angle_from_closing():
    """A two-peaked angle (90° and 130°) gets a soft harmonic term: closing it to 40° costs ~3 k_BT from the
    angle term alone, but ≥ 10 k_BT once the 1-3 pair is repelled below its closest approach in the data."""
    rng = np.random.default_rng(2)
    n = 20_000
    theta = np.radians(np.where(rng.random(n) < 0.5, 90.0, 130.0) + rng.normal(0, 8.0, n))[:, None]
    frames = chain_from_internal(rng.normal(3.8, 0.05, (n, 2)), theta, np.zeros((n, 0)))
    probe = torch.as_tensor(chain_from_internal([[3.8, 3.8]] * 2, np.radians([[110.0], [40.0]]), np.zeros((2, 0))))
    cost = {}
    for s in (2, 3):
        prior = fit_priors(frames, KBT, repulsion_min_separation=s)[0]
        e = prior.energy(probe).detach().numpy()
        cost[s] = (e[1] - e[0]) / KBT
    assert cost[3] < 5 and cost[2] > 10, cost


def test_a_model_saved_before_the_repulsion_setting_was_recorded_builds_with_the_old_pairs():
    from opforce_tutorial.study import build_cg_model

    schnet = {"bead_types": [0, 1, 2, 3, 4], "hidden": 8, "n_interactions": 1, "n_rbf": 4, "cutoff": 10.0}
    old = build_cg_model({"n_beads": 5, "n_fourier": 3, "schnet": schnet})
    new = build_cg_model({"n_beads": 5, "n_fourier": 3, "repulsion_min_separation": 2, "schnet": schnet})
    assert old.prior.pairs.tolist() == [[0, 3], [0, 4], [1, 4]] and len(new.prior.pairs) == 6


def _random_chain(gen, n_frames=6, n_beads=5):
    steps = 3.8 * torch.nn.functional.normalize(torch.randn(n_frames, n_beads, 3, dtype=torch.float64, generator=gen), dim=-1)
    return torch.cumsum(steps, dim=1)


def _schnet(n_beads=5, dihedral_hidden=0):
    torch.manual_seed(0)
    return SchNetEnergy(SchNetConfig(bead_types=list(range(n_beads)), hidden=16, n_interactions=2, n_rbf=8,
                                     dihedral_hidden=dihedral_hidden)).double()


@pytest.mark.parametrize("make", [toy_prior, _schnet, lambda: _schnet(dihedral_hidden=8), lambda: CGModel(toy_prior(), _schnet())],
                         ids=["prior", "schnet", "schnet+dihedrals", "cg"])
def test_forces_are_minus_the_finite_difference_gradient(make, gen):
    model = make()
    x = _random_chain(gen)
    f = model.forces(x)
    h = 1e-6
    d = torch.randn(x.shape, dtype=x.dtype, generator=gen)
    fd = (model.energy(x + h * d) - model.energy(x - h * d)) / (2 * h)
    assert torch.allclose((f * d).sum(dim=(1, 2)), -fd, rtol=1e-5, atol=1e-6)
    assert torch.allclose(f.sum(dim=1), torch.zeros(len(x), 3, dtype=x.dtype), atol=1e-8)  # no net force


def test_batched_evaluation_equals_one_pass(gen, device):
    model = CGModel(toy_prior(), _schnet()).to(device)
    x = _random_chain(gen, n_frames=11).to(device)
    assert torch.allclose(model.forces_in_batches(x.cpu(), batch_size=4, device=device), model.forces(x).cpu(), atol=1e-12)
    assert not model.forces_in_batches(x, batch_size=4).requires_grad
    assert torch.allclose(model.energy_in_batches(x, batch_size=4), model.energy(x).detach(), atol=1e-12)


@pytest.mark.parametrize("dihedral_hidden", [0, 8])
def test_schnet_energy_is_invariant_to_rotations_and_translations(gen, device, dihedral_hidden):
    net = _schnet(dihedral_hidden=dihedral_hidden).to(device)
    x = _random_chain(gen).to(device)
    rot = random_rotations(len(x), torch.float64, generator=gen).to(device)
    moved = x @ rot.transpose(1, 2) + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, device=device)
    assert torch.allclose(net.energy(moved), net.energy(x), atol=1e-10)


def test_distances_cannot_tell_a_chain_from_its_mirror_image_signed_dihedrals_can(gen):
    from opforce_tutorial.geometry import dihedral_angles

    x = _random_chain(gen)
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=x.dtype)  # a reflection flips every dihedral's sign
    quads = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    assert torch.allclose(dihedral_angles(mirror, quads), -dihedral_angles(x, quads))
    assert torch.allclose(_schnet().energy(mirror), _schnet().energy(x), atol=1e-10)  # αR and its mirror: one energy
    chiral = _schnet(dihedral_hidden=8)
    assert (chiral.energy(mirror) - chiral.energy(x)).abs().min() > 1e-6
    with pytest.raises(ValueError, match="at least 4 beads"):
        _schnet(n_beads=3, dihedral_hidden=8)


def test_validation_mask_is_set_by_source_frames():
    idx = np.array([0, 5, 9, 9, 3])
    assert validation_mask(idx, 10, 0.2).tolist() == [False, False, True, True, False]
    traj = np.array([0] * 4 + [1] * 6)  # held out: the last 30 % of each, frame 3 and frames 8, 9
    assert validation_mask(idx, 10, 0.3, traj_ids=traj).tolist() == [False, False, True, True, True]
    assert validation_mask(np.arange(10), 10, 0.3, traj_ids=traj).nonzero()[0].tolist() == [3, 8, 9]
    with pytest.raises(ValueError):
        validation_mask(idx, 10, 1.5)
    with pytest.raises(ValueError, match="contiguous"):
        validation_mask(idx, 10, 0.3, traj_ids=np.array([0, 1] * 5))


def _harmonic_labelled_set(n=3000, seed=0):
    """Frames of a 4-bead chain with forces of a known energy (prior with other constants + pair term)."""
    rng = np.random.default_rng(seed)
    r = 3.8 + 0.05 * rng.standard_normal((n, 3))
    theta = np.radians(100.0) + 0.1 * rng.standard_normal((n, 2))
    phi = rng.uniform(-np.pi, np.pi, n)
    x = torch.as_tensor(chain_from_internal(r, theta, phi))
    truth = toy_prior(4)
    with torch.no_grad():
        truth.bond_k.fill_(80.0)
        truth.angle_k.fill_(30.0)
    return x.float().numpy(), truth.forces(x).float().numpy()


def test_force_matching_learns_the_residual_stops_early_and_resumes(tmp_path):
    x, f = _harmonic_labelled_set()
    prior = toy_prior(4)  # bond and angle constants off: the network must learn the difference
    cfg = SchNetConfig(bead_types=[0, 1, 2, 3], hidden=32, n_interactions=2, n_rbf=16)
    settings = ForceMatchingSettings(n_steps=400, batch_size=128, lr=3e-3, eval_every=50, checkpoint_every=100,
                                     patience=3)
    ckpt = str(tmp_path / "cg.pt")
    model, hist = train_cg_model(x, f, prior, cfg, settings, checkpoint=ckpt, progress=False)
    residual = f - prior.float().forces(torch.as_tensor(x)).numpy()
    base = float((residual[int(0.9 * len(x)):] ** 2).mean())
    assert min(hist["val_loss"]) < 0.5 * base, (hist["val_loss"], base)
    # the returned model has the best validation loss
    val = torch.as_tensor(x[int(0.9 * len(x)):])
    mse = float(((model.forces(val) - torch.as_tensor(f[int(0.9 * len(x)):])) ** 2).mean())
    assert mse == pytest.approx(min(hist["val_loss"]), rel=1e-3)
    from opforce_tutorial.cg.training import held_out_force_mse

    assert held_out_force_mse(model, x, f) == pytest.approx(min(hist["val_loss"]), rel=1e-3)  # the same samples
    _, hist2 = train_cg_model(x, f, prior, cfg, settings, checkpoint=ckpt, progress=False)
    assert hist2 == hist
    patient = ForceMatchingSettings(n_steps=400, batch_size=128, lr=3e-1, eval_every=20, patience=1)
    _, hist3 = train_cg_model(x, f, prior, cfg, patient, progress=False)  # lr far too high: stops early
    assert hist3["stopped_early"] and hist3["step"][-1] < 400
    with pytest.raises(ValueError, match="non-finite"):
        train_cg_model(np.full_like(x, np.nan), f, prior, cfg, settings, progress=False)



def test_the_cosine_schedule_anneals_from_lr_to_lr_final_and_a_killed_run_resumes_on_it(tmp_path, monkeypatch):
    from dataclasses import replace

    from opforce_tutorial.kernels import training
    from opforce_tutorial.kernels.training import cosine_lr

    assert cosine_lr(1e-3, 1e-5, 0, 100) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 1e-5, 50, 100) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert cosine_lr(1e-3, 1e-5, 100, 100) == pytest.approx(1e-5) == cosine_lr(1e-3, 1e-5, 150, 100)
    rates = [cosine_lr(1e-3, 0.0, t, 100) for t in range(101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    with pytest.raises(ValueError, match="lr_final must be in"):
        ForceMatchingSettings(lr=1e-3, lr_final=2e-3)
    x, f = _harmonic_labelled_set()
    prior, cfg = toy_prior(4), SchNetConfig(bead_types=[0, 1, 2, 3], hidden=16, n_interactions=1, n_rbf=8)
    annealed = ForceMatchingSettings(n_steps=60, batch_size=64, lr=3e-3, lr_final=3e-5, eval_every=20,
                                     checkpoint_every=20, patience=None)
    _, whole = train_cg_model(x, f, prior, cfg, annealed, checkpoint=str(tmp_path / "whole.pt"), progress=False)
    last = torch.load(tmp_path / "whole.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(cosine_lr(3e-3, 3e-5, 59, 60))
    save = training.save_checkpoint

    def killed_after_step_40(path, model, optimizer, generator, step, *args, **kwargs):
        save(path, model, optimizer, generator, step, *args, **kwargs)
        if step == 40:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", killed_after_step_40)
    with pytest.raises(KeyboardInterrupt):
        train_cg_model(x, f, prior, cfg, annealed, checkpoint=str(tmp_path / "killed.pt"), progress=False)
    monkeypatch.setattr(training, "save_checkpoint", save)
    _, resumed = train_cg_model(x, f, prior, cfg, annealed, checkpoint=str(tmp_path / "killed.pt"), progress=False)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)  # resumed on the same schedule
    _, flat = train_cg_model(x, f, prior, cfg, replace(annealed, lr_final=None), progress=False)
    assert flat["val_loss"][-1] != pytest.approx(whole["val_loss"][-1], rel=1e-6)  # the schedule changes the run


def test_a_clamped_network_is_flat_beyond_its_training_distances():
    """Inside the training range the clamp changes nothing; beyond it the network's energy stops changing."""
    rng = np.random.default_rng(3)
    n = 2000
    frames = chain_from_internal(rng.normal(3.8, 0.05, (n, 2)), np.radians(rng.normal(100, 5, (n, 1))), np.zeros((n, 0)))
    base = dict(bead_types=[0, 1, 2], hidden=8, n_interactions=1, n_rbf=8, cutoff=10.0)
    torch.manual_seed(0)
    clamped = SchNetEnergy(SchNetConfig(**base, clamp_to_training=True)).double()
    clamped.set_distance_range(frames)
    free = SchNetEnergy(SchNetConfig(**base)).double()
    free.load_state_dict({k: v for k, v in clamped.state_dict().items() if k not in ("d_lo", "d_hi")})
    inside = torch.as_tensor(frames[:5])
    assert torch.allclose(clamped.energy(inside), free.energy(inside))
    stretched = torch.as_tensor(chain_from_internal([[5.0, 3.8], [5.5, 3.8]], np.radians([[100.0]] * 2), np.zeros((2, 0))))
    e = clamped.energy(stretched)
    assert torch.isclose(e[0], e[1]) and not torch.isclose(*free.energy(stretched))
    with pytest.raises(ValueError, match="clamp_to_training=True"):
        free.set_distance_range(frames)


def test_an_ensemble_is_the_mean_energy_of_its_networks_and_refuses_mixed_ones():
    from opforce_tutorial.cg import NetworkEnsemble

    cfg = SchNetConfig(bead_types=[0, 1, 2, 3], hidden=8, n_interactions=1, n_rbf=8)
    torch.manual_seed(0)
    nets = [SchNetEnergy(cfg).double() for _ in range(3)]
    ensemble = NetworkEnsemble(nets)
    x = torch.as_tensor(_harmonic_labelled_set(8)[0], dtype=torch.float64)
    assert torch.allclose(ensemble.energy(x), sum(n.energy(x) for n in nets) / 3)
    assert torch.allclose(ensemble.forces(x), sum(n.forces(x) for n in nets) / 3)
    assert ensemble.config == cfg
    with pytest.raises(ValueError, match="at least two"):
        NetworkEnsemble(nets[:1])
    with pytest.raises(ValueError, match="share one SchNetConfig"):
        NetworkEnsemble([nets[0], SchNetEnergy(SchNetConfig(bead_types=[0, 1, 2, 3], hidden=4))])


def test_an_ensemble_fit_trains_seeded_members_resumes_and_beats_their_mean_error(tmp_path):
    from dataclasses import replace

    from opforce_tutorial.cg.pipeline import CGRunSettings, fit_cg_model
    from opforce_tutorial.cg.training import held_out_force_mse
    from opforce_tutorial.study import build_cg_model

    x, f = _harmonic_labelled_set(600)
    settings = CGRunSettings(hidden=8, n_interactions=1, n_rbf=8,
                             force_matching=ForceMatchingSettings(n_steps=40, batch_size=64, eval_every=20))
    single, _, one = fit_cg_model(x, f, KBT, [0, 1, 2, 3], settings, progress=False)
    ckpt = str(tmp_path / "cg.ckpt")
    model, _, hist = fit_cg_model(x, f, KBT, [0, 1, 2, 3], settings, checkpoint=ckpt, progress=False, n_members=3)
    members = model.net.members
    assert len(members) == 3 and (tmp_path / "cg.ckpt.member2").exists()
    xs = torch.as_tensor(x[:50])
    assert torch.allclose(members[0].forces(xs), single.net.forces(xs))  # member 0 is the single network's fit
    assert not torch.allclose(members[1].forces(xs), members[0].forces(xs))  # another seed, another fit
    errors = [held_out_force_mse(_with_net(model, m), x, f) for m in members]
    assert hist["val_loss"][0] <= np.mean(errors) + 1e-6  # the mean force's error is at most the members' mean (Jensen)
    assert [h["val_loss"] for h in hist["members"]][0] == one["val_loss"]
    _, _, again = fit_cg_model(x, f, KBT, [0, 1, 2, 3], settings, checkpoint=ckpt, progress=False, n_members=3)
    assert again["val_loss"] == pytest.approx(hist["val_loss"])  # every member resumed from its own checkpoint
    config = {"n_beads": 4, "n_fourier": model.prior.n_fourier, "repulsion_min_separation": 2,
              "schnet": {**model.net.config.__dict__}, "n_members": 3}
    rebuilt = build_cg_model(config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(rebuilt.forces(xs), model.forces(xs))
    with pytest.raises(ValueError, match="at least 1"):
        fit_cg_model(x, f, KBT, [0, 1, 2, 3], replace(settings), progress=False, n_members=0)


def _with_net(model, net):
    return CGModel(model.prior, net)


def test_run_settings_build_the_network_they_describe():
    from opforce_tutorial.cg.pipeline import CGRunSettings

    settings = CGRunSettings(hidden=8, n_interactions=1, n_rbf=4, cutoff=9.0, dihedral_hidden=6,
                             clamp_to_training=False)
    config = settings.schnet_config([0, 1, 1, 0])
    assert (config.bead_types, config.hidden, config.n_interactions, config.n_rbf, config.cutoff,
            config.dihedral_hidden, config.clamp_to_training) == ([0, 1, 1, 0], 8, 1, 4, 9.0, 6, False)
    net = SchNetEnergy(config)
    assert net.energy(torch.randn(3, 4, 3)).shape == (3,)
