import numpy as np
import pytest
import torch

from opforce_tutorial.kernels.cnf import EGNNConfig, EGNNVectorField
from opforce_tutorial.kernels.divergence import exact_divergence, loop_divergence
from opforce_tutorial.kernels.coupling import random_rotations


def cnf_kernel(field, noise_std, prior_std, kbt, **options):
    """The CNF's reverse-noise kernel, as the chapters build it."""
    from opforce_tutorial.kernels import ReverseNoiseKernel
    from opforce_tutorial.kernels.cnf import CNFDensity

    return ReverseNoiseKernel(CNFDensity(field, prior_std, **options), noise_std, kbt, mean_free=True)


@pytest.fixture
def field():
    torch.manual_seed(0)
    return EGNNVectorField(EGNNConfig(bead_types=[0, 1, 2, 1, 0], hidden=16, n_layers=3)).double()


def _frames(gen, b=4, n=5):
    x = 3.8 * torch.randn(b, n, 3, dtype=torch.float64, generator=gen)
    return x - x.mean(dim=1, keepdim=True)


def test_vector_field_is_rotation_equivariant_translation_invariant_and_mean_free(field, gen):
    x = _frames(gen)
    r = random_rotations(len(x), torch.float64, generator=gen)
    v = field(0.3, x)
    assert torch.allclose(field(0.3, x @ r.transpose(1, 2)), v @ r.transpose(1, 2), atol=1e-10)
    assert torch.allclose(field(0.3, x + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)), v, atol=1e-10)
    assert torch.allclose(v.sum(dim=1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-10)


def test_exact_divergence_equals_trace_of_full_jacobian(field, gen, device):
    field = field.to(device)
    x = _frames(gen, b=3).to(device)
    v, div = exact_divergence(field, 0.7, x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda xi: field(0.7, xi[None])[0].flatten(), x[i])
        assert torch.allclose(div[i], jac.reshape(15, 15).trace(), atol=1e-10)
    v2, div2 = loop_divergence(field, 0.7, x)
    assert torch.allclose(div, div2, atol=1e-10) and torch.allclose(v, v2)


def test_exact_divergence_is_differentiable(field, gen):
    x = _frames(gen, b=2).requires_grad_(True)
    _, div = exact_divergence(field, 0.2, x)
    (g,) = torch.autograd.grad(div.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_log_density_matches_change_of_variables_and_inverse(field, gen):
    """log q(y|c) from the backward pass equals log N(z; c, σ_p²) − log|det ∂Φ/∂z| from the forward map."""
    from opforce_tutorial.kernels.cnf import integrate
    from opforce_tutorial.kernels.coupling import helmert_basis

    kern = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, solver="rk4", n_steps=16)
    c = _frames(gen, b=1)
    z = c + 0.3 * (lambda e: e - e.mean(1, keepdim=True))(torch.randn(1, 5, 3, dtype=torch.float64, generator=gen))
    y, _ = integrate(field, z, 0.0, 1.0, 16)
    z_back, _ = integrate(field, y, 1.0, 0.0, 16)
    assert torch.allclose(z_back, z, atol=1e-7)
    basis = torch.kron(helmert_basis(5), torch.eye(3, dtype=torch.float64))  # (15, 12): mean-free subspace

    def forward(u):
        zz = z.flatten() + basis @ u
        return basis.T @ integrate(field, zz.view(1, 5, 3), 0.0, 1.0, 16)[0].flatten()

    jac = torch.autograd.functional.jacobian(forward, torch.zeros(12, dtype=torch.float64))
    d = z - c
    log_base = -0.5 * (d**2).sum() / 0.3**2 - 12 * (0.5 * torch.log(torch.tensor(2 * torch.pi)) + torch.log(torch.tensor(0.3)))
    expected = log_base - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(kern.flow.log_prob(y, c), expected.to(torch.float64), atol=1e-5)


def test_cnf_labels_are_finite_difference_scores_with_zero_net_force(field, gen):

    kern = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, solver="rk4", n_steps=4)
    x = _frames(gen, b=3)
    y, f = kern.sample_with_forces(x, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    e = torch.randn(x.shape, dtype=x.dtype, generator=g)
    c = x + 0.05 * (e - e.mean(1, keepdim=True))
    assert torch.allclose(f.sum(dim=1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-8)
    h = 1e-5
    direction = torch.randn(x.shape, dtype=x.dtype, generator=g)
    direction = direction - direction.mean(1, keepdim=True)
    fd = (kern.flow.log_prob(y + h * direction, c) - kern.flow.log_prob(y - h * direction, c)) / (2 * h)
    assert torch.allclose((f * direction).sum(dim=(1, 2)), 0.6 * fd.detach(), rtol=1e-4, atol=1e-5)
    # rotating c and y rotates the label (equivariance of the whole kernel)
    r = random_rotations(1, torch.float64, generator=g)[0]
    y_r, c_r = y @ r.T, c @ r.T
    y_r.requires_grad_(True)
    (score_r,) = torch.autograd.grad(kern.flow.log_prob(y_r, c_r).sum(), y_r)
    yy = y.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(kern.flow.log_prob(yy, c).sum(), yy)
    assert torch.allclose(score_r, score @ r.T, atol=1e-7)


def test_dopri5_matches_the_exact_solution_of_a_linear_ode():
    from opforce_tutorial.kernels.cnf import SolverStats, integrate_adaptive

    x0 = torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64)
    stats = SolverStats()
    x1, _ = integrate_adaptive(lambda t, x: -(1.0 + t) * x, x0, 0.0, 1.0, rtol=1e-8, atol=1e-8, stats=stats)
    assert torch.allclose(x1, x0 * torch.exp(torch.tensor(-1.5, dtype=torch.float64)), rtol=1e-7)
    assert stats.accepted > 1 and stats.evaluations >= 6 * stats.accepted
    back, _ = integrate_adaptive(lambda t, x: -(1.0 + t) * x, x1, 1.0, 0.0, rtol=1e-8, atol=1e-8)
    assert torch.allclose(back, x0, rtol=1e-7)
    with pytest.raises(RuntimeError, match="more than 3 steps"):
        integrate_adaptive(lambda t, x: -(1.0 + t) * x, x0, 0.0, 1.0, rtol=1e-12, atol=1e-12, max_steps=3)


def test_dopri5_labels_agree_with_fine_rk4_and_do_not_depend_on_chunking(field, gen):

    x = _frames(gen, b=2)
    adaptive = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, rtol=1e-6, atol=1e-6, chunk_size=1)
    fine = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, solver="rk4", n_steps=32)
    y, f = adaptive.sample_with_forces(x, generator=torch.Generator().manual_seed(7))
    y2, f2 = fine.sample_with_forces(x, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(y, y2, atol=1e-6) and torch.allclose(f, f2, rtol=1e-4, atol=1e-4)
    adaptive.flow.chunk_size = 2
    y3, f3 = adaptive.sample_with_forces(x, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(y3, y, atol=1e-6) and torch.allclose(f3, f, rtol=1e-4, atol=1e-4)
    assert adaptive.flow.stats.accepted > 0 and adaptive.flow.stats.rejected >= 0
    with pytest.raises(ValueError, match="solver"):
        cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, solver="euler")


def test_flow_matching_training_learns_and_resumes(tmp_path):
    """On a 3-bead Gaussian toy the flow-matching loss falls; a finished checkpoint resumes unchanged."""
    from opforce_tutorial.kernels.cnf import CNFTraining, _flow_matching_batch, train_cnf

    gen = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [3.8, 3.8, 0.0]])
    x = mu + 0.1 * torch.randn(2000, 3, 3, generator=gen)
    settings = CNFTraining(noise_std=0.1, prior_std=0.1, n_steps=300, batch_size=128, lr=3e-3, eval_every=100,
                           checkpoint_every=150)
    cfg = EGNNConfig(bead_types=[0, 1, 2], hidden=16, n_layers=2)
    ckpt = str(tmp_path / "cnf.pt")
    field, hist = train_cnf(x, cfg, settings, checkpoint=ckpt, progress=False)
    assert hist["step"] == [100, 200, 300]
    # the zero field's loss is E|x₁ − x₀|²; a field that learned the conditional velocity does better
    _, _, target = _flow_matching_batch(x, settings, torch.Generator().manual_seed(5), "cpu")
    assert hist["val_loss"][-1] < 0.92 * float((target**2).mean()), hist
    _, hist2 = train_cnf(x, cfg, settings, checkpoint=ckpt, progress=False)
    assert hist2 == hist


def test_a_chunk_the_solver_cannot_finish_is_dropped_not_zero_filled(field, gen, tmp_path):
    from opforce_tutorial.labels import LabelSettings, label_frames

    x = _frames(gen, b=4)
    stiff = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2, max_steps=2)
    y, f = stiff.sample_with_forces(x, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(y).all() and torch.isnan(f).all() and stiff.failed_chunks == 2
    field.float()  # the labelling pipeline works in float32
    ok = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2)
    frames = _frames(gen, b=6).float().numpy()
    out = label_frames(frames, stiff, 300.0, tmp_path / "stiff.npz", LabelSettings(1.0, 1, 3), progress=False)
    assert out.metadata["n_dropped"] == 6 and out.n_labels == 0
    out = label_frames(frames, ok, 300.0, tmp_path / "ok.npz", LabelSettings(1.0, 1, 3), progress=False)
    assert out.metadata["n_dropped"] == 0 and np.isfinite(out.forces).all() and ok.failed_chunks == 0


def test_the_step_cap_counts_the_steps_of_one_solve_not_all_solves(field, gen):

    x = _frames(gen, b=8)
    probe = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2)
    probe.sample_with_forces(x[:2], generator=torch.Generator().manual_seed(0))
    one_chunk = probe.flow.stats.accepted + probe.flow.stats.rejected  # a forward and a backward solve
    capped = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2, max_steps=2 * one_chunk)
    for seed in range(3):  # 12 chunks: a running count would pass the cap after two
        _, f = capped.sample_with_forces(x, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(f).all()
    assert capped.failed_chunks == 0 and capped.flow.stats.accepted + capped.flow.stats.rejected > 5 * capped.flow.max_steps


def _chains(b, n, seed=0):
    """Random Cα-like chains (3.8 Å bonds), mean-free, float64."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(b, n, 3, dtype=torch.float64, generator=g)
    x = torch.cumsum(3.8 * steps / steps.norm(dim=-1, keepdim=True), dim=1)
    return x - x.mean(dim=1, keepdim=True)


def _draws(x, seed=1, noise_std=0.05, prior_std=0.05):
    g = torch.Generator().manual_seed(seed)

    def mean_free():
        e = torch.randn(x.shape, dtype=torch.float64, generator=g)
        return e - e.mean(dim=1, keepdim=True)

    c = x + noise_std * mean_free()
    return c + prior_std * mean_free(), c


def _inverse_reference(field, y, c, prior_std=0.05):
    """k_BT ∇_y log q(y|c) by the inverse solve with autograd, float64 at a tight tolerance."""

    ref = cnf_kernel(field.double(), 0.05, prior_std, 0.6, rtol=1e-10, atol=1e-10, method="inverse")
    yy = y.double().clone().requires_grad_(True)
    (score,) = torch.autograd.grad(ref.flow.log_prob(yy, c.double()).sum(), yy)
    return 0.6 * score


def _relative(f, ref):
    return ((f.double() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max()


@pytest.mark.parametrize("n", [5, 10])
def test_score_labels_equal_the_inverse_solve_labels(n, dtype):
    """One forward solve of (x, s) gives the labels of the inverse solve: ≤ 1e-4 (float32), 1e-6 (float64)."""

    torch.manual_seed(0)
    field = EGNNVectorField(EGNNConfig(bead_types=[i % 4 for i in range(n)], hidden=16, n_layers=2))
    x = _chains(3, n)
    z, c = _draws(x)
    tol = {torch.float32: 1e-6, torch.float64: 1e-9}[dtype]
    kern = cnf_kernel(field.to(dtype), 0.05, 0.05, 0.6, rtol=tol, atol=tol)
    y, score = kern.flow.solve(z.to(dtype), c.to(dtype))
    f = 0.6 * score
    assert _relative(f, _inverse_reference(field, y, c)) <= {torch.float32: 1e-4, torch.float64: 1e-6}[dtype]
    assert f.sum(dim=1).abs().max() < 1e-4 * f.abs().max()  # zero net force
    costs = kern.last_costs
    assert costs["evaluations"].tolist() == [kern.flow.stats.evaluations] * 3 and (costs["label_error"] > 0).all()


def test_score_labels_of_the_trained_chapter_2_flow_equal_the_inverse_solve_labels(dtype):
    from opforce_tutorial import pretrained
    from opforce_tutorial.data.dataset import load_dataset

    field = pretrained.load("ala2-cnf-0.05")[0]
    x = torch.as_tensor(load_dataset("ala2").positions[[10, 50_000]], dtype=torch.float64)
    z, c = _draws(x - x.mean(dim=1, keepdim=True))
    tol = {torch.float32: 1e-6, torch.float64: 1e-9}[dtype]
    y, score = cnf_kernel(field.to(dtype), 0.05, 0.05, 0.6, rtol=tol, atol=tol).flow.solve(z.to(dtype), c.to(dtype))
    f = 0.6 * score
    assert _relative(f, _inverse_reference(field, y, c)) <= {torch.float32: 1e-4, torch.float64: 1e-6}[dtype]


def test_score_labels_rotate_with_the_frames(field):

    kern = cnf_kernel(field, 0.05, 0.3, 0.6, rtol=1e-9, atol=1e-9)
    z, c = _draws(_chains(2, 5), prior_std=0.3)
    r = random_rotations(1, torch.float64, generator=torch.Generator().manual_seed(4))[0]
    y, f = kern.flow.solve(z, c)
    y_r, f_r = kern.flow.solve(z @ r.T, c @ r.T)
    assert torch.allclose(y_r, y @ r.T, atol=1e-8) and torch.allclose(f_r, f @ r.T, rtol=1e-6, atol=1e-6)


def test_chunk_plan_fits_the_budget_and_keeps_all_directions_when_it_can():
    from opforce_tutorial.kernels import cnf

    def planned_bytes(n, hidden, layers, frames, directions):
        unit = n**2 * hidden * layers
        return frames * unit * (cnf._BYTES_PER_FRAME_UNIT + cnf._BYTES_PER_DIRECTION_UNIT * directions)

    for n, budget in ((5, 2.0), (10, 2.0), (10, 0.3), (16, 1.0)):
        frames, directions = cnf.chunk_plan(n, 64, 5, 4, budget)
        assert directions == 3 * n - 6 and planned_bytes(n, 64, 5, frames, directions) <= budget * 1e9
        assert frames == 512 or planned_bytes(n, 64, 5, frames + 1, directions) > budget * 1e9
    frames, directions = cnf.chunk_plan(22, 64, 5, 4, 1.0)  # not one frame with all 60 directions
    assert frames == 1 and 1 <= directions < 60 and planned_bytes(22, 64, 5, 1, directions) <= 1e9
    frames, directions = cnf.chunk_plan(10, 64, 5, 4, 2.0, chunk_size=64)
    assert frames == 64 and 1 <= directions < 24 and planned_bytes(10, 64, 5, 64, directions) <= 2e9
    assert planned_bytes(10, 64, 5, 64, directions + 1) > 2e9
    assert cnf.chunk_plan(10, 64, 5, 4, 0.05, chunk_size=64)[1] == 1  # too small for 64 frames: fewer frames
    assert cnf.chunk_plan(10, 64, 5, 4, 0.05, chunk_size=64)[0] < 64
    with pytest.raises(ValueError, match="memory_budget_gb"):
        cnf.chunk_plan(10, 64, 5, 4, 0.0)


def test_a_cpu_field_is_solved_in_cache_sized_chunks_and_another_device_in_the_planned_ones(field):
    from opforce_tutorial.kernels import cnf

    assert cnf.chunk_plan(5, 16, 3, 8, 2.0)[0] == 512  # the budget alone allows the largest chunk
    assert cnf.CNFDensity(field, 0.1).chunk_size == cnf.CPU_MAX_CHUNK == 32
    assert cnf.CNFDensity(field, 0.1, chunk_size=64).chunk_size == 64  # a chunk asked for is kept
    assert cnf.CNFDensity(field.to("meta"), 0.1).chunk_size == 512  # not a CPU: the memory plan decides


def test_a_right_hand_side_stays_within_the_memory_it_was_planned_for(tmp_path):
    """Peak resident memory of one score right-hand side, in a fresh process, is within the budget."""
    import subprocess
    import sys

    script = tmp_path / "peak.py"
    script.write_text(
        "import resource, torch\n"
        "torch.set_num_threads(1)\n"
        "from opforce_tutorial.kernels.cnf import EGNNConfig, EGNNVectorField, chunk_plan\n"
        "from opforce_tutorial.kernels.divergence import score_rhs\n"
        "field = EGNNVectorField(EGNNConfig(bead_types=list(range(10)), hidden=32, n_layers=3))\n"
        "frames, group = chunk_plan(10, 32, 3, 4, 0.3, chunk_size=48)\n"
        "x = 3.8 * torch.randn(frames, 10, 3); s = torch.randn(frames, 10, 3)\n"
        "field(0.1, x[:1])\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "score_rhs(field, 0.3, x, s, group)\n"
        "print(frames, group, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    frames, group, peak = map(int, out.stdout.split())
    assert frames == 48 and group < 24 and peak <= 0.3e9, (frames, group, peak)


def test_labelling_keeps_each_cnf_labels_cost_and_error(field, tmp_path):
    from opforce_tutorial.labels import LabelSettings, label_frames, load_labels

    field.float()
    kern = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2)
    frames = _chains(5, 5).float().numpy()
    out = label_frames(frames, kern, 300.0, tmp_path / "l.npz", LabelSettings(1.0, 1, 3), progress=False)
    back = load_labels(tmp_path / "l.npz")
    assert out.metadata["label_method"] == "score" and out.metadata["n_failed_chunks"] == 0
    for key in ("solver_evaluations", "solver_accepted", "solver_rejected", "label_error"):
        assert back.costs[key].shape == (5,) and np.array_equal(back.costs[key], out.costs[key])
    assert (back.costs["solver_evaluations"] >= 6 * back.costs["solver_accepted"]).all()
    stiff = cnf_kernel(field, noise_std=0.05, prior_std=0.3, kbt=0.6, chunk_size=2, max_steps=2)
    out = label_frames(frames, stiff, 300.0, tmp_path / "s.npz", LabelSettings(1.0, 1, 3), progress=False)
    assert out.metadata["n_failed_chunks"] == 3 and out.metadata["n_dropped"] == 5 and out.n_labels == 0
