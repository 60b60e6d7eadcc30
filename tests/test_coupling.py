import math

import pytest
import torch

from opforce_tutorial.kernels import remove_mean
from opforce_tutorial.kernels import ReverseNoiseKernel
from opforce_tutorial.kernels.coupling import CouplingFlow, CouplingFlowConfig, random_rotations


@pytest.fixture(params=["helmert", "bonds", "helmert triangular", "bonds triangular", "bonds diagonal invariant"])
def coordinates(request):
    """Internal coordinates of the flow, and its position couplings' linear part."""
    return request.param


def _small_flow(seed=0, n_beads=3, coordinates="helmert"):
    torch.manual_seed(seed)
    coords, affine, *extra = coordinates.split() + ["diagonal"] * (" " not in coordinates)
    cfg = CouplingFlowConfig(bead_types=list(range(n_beads)), n_coupling_layers=2, n_transformer_layers=1, d_model=12,
                             lengthscales=[1.0, 3.0], d_ff=16, coordinates=coords, affine=affine,
                             invariant_features="invariant" in extra)
    flow = CouplingFlow(cfg).double()
    with torch.no_grad():  # leave the identity initialisation so that the tests see a non-trivial map
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


def test_inverse_of_forward_is_identity(gen, device, coordinates):
    flow = _small_flow(coordinates=coordinates).to(device)
    c = 3.8 * torch.randn(4, 3, 3, dtype=torch.float64, generator=gen).to(device)
    d0 = torch.randn(4, 2, 3, dtype=torch.float64, generator=gen).to(device)
    v0 = torch.randn(4, 3, 3, dtype=torch.float64, generator=gen).to(device)
    d, v, logdet_f = flow.forward_map(c, d0, v0)
    d0b, v0b, logdet_i = flow.inverse_map(c, d, v)
    assert torch.allclose(d0b, d0, atol=1e-10) and torch.allclose(v0b, v0, atol=1e-10)
    assert torch.allclose(logdet_f, -logdet_i, atol=1e-10)


def test_log_density_matches_brute_force_jacobian(gen, device, coordinates):
    """log q(δ̃, v|c) = log N(z) − log|det ∂f/∂z|, with the 15×15 Jacobian computed by autograd
    (plus, for bond coordinates, the constant log|det| of the map from Helmert coordinates)."""
    flow = _small_flow(1, coordinates=coordinates).to(device)
    c = 3.8 * torch.randn(1, 3, 3, dtype=torch.float64, generator=gen).to(device)
    z = torch.randn(15, dtype=torch.float64, generator=gen).to(device)

    def f(zz):
        d, v, _ = flow.forward_map(c, zz[:6].view(1, 2, 3), zz[6:].view(1, 3, 3))
        return torch.cat([d.flatten(), v.flatten()])

    jac = torch.autograd.functional.jacobian(f, z)
    out = f(z)
    y, v = c + flow.from_internal(out[:6].view(1, 2, 3), c), out[6:].view(1, 3, 3)
    base = flow._base_log_prob(z[:6].view(1, 2, 3), z[6:].view(1, 3, 3))
    expected = base - torch.linalg.slogdet(jac)[1]
    if coordinates.startswith("bonds"):
        d = (y - c)[0]  # Helmert coordinates → bond coordinates: one linear map per Cartesian axis
        assert flow.bond_log_jacobian == pytest.approx(3 * math.log(math.sqrt(3)), rel=1e-12)  # det = √N for a chain
        assert torch.allclose(flow.to_internal(d[None], c), out[:6].view(1, 2, 3), atol=1e-12)
        expected = expected + flow.bond_log_jacobian
    assert torch.allclose(flow.log_prob(y, c, v), expected, atol=1e-9)


def test_label_is_kbt_times_finite_difference_of_log_q(gen, coordinates):
    flow = _small_flow(2, coordinates=coordinates)
    kern = ReverseNoiseKernel(flow, noise_std=0.05, kbt=0.6, mean_free=True)
    x = 3.8 * torch.randn(5, 3, 3, dtype=torch.float64, generator=gen)
    y, f = kern.sample_with_forces(x, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    c = x + 0.05 * remove_mean(torch.randn(x.shape, dtype=x.dtype, generator=g))
    _, v = flow.sample(c, generator=g)
    assert torch.allclose((y - c).mean(dim=1), torch.zeros(5, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(f.sum(dim=1), torch.zeros(5, 3, dtype=torch.float64), atol=1e-9)  # zero net force
    h = 1e-6
    for bead, dim in [(0, 0), (1, 2), (2, 1)]:
        # q lives on the mean-free subspace: differentiate along a mean-free direction (bead up, others down)
        e = torch.full_like(y, 0.0)
        e[:, :, dim] = -h / 3
        e[:, bead, dim] += h
        with torch.no_grad():
            fd = (flow.log_prob(y + e, c, v) - flow.log_prob(y - e, c, v)) / (2 * h)
        assert torch.allclose((f * e / h).sum(dim=(1, 2)), 0.6 * fd, rtol=1e-5, atol=1e-6)


def test_bond_frames_are_orthonormal_follow_the_bonds_and_rotate_with_the_chain(gen):
    from opforce_tutorial.kernels.coupling import bond_frames

    c = 3.8 * torch.randn(4, 5, 3, dtype=torch.float64, generator=gen)
    f = bond_frames(c)
    assert torch.allclose(f @ f.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(4, 4, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(f), torch.ones(4, 4, dtype=torch.float64))
    bonds = c[:, 1:] - c[:, :-1]
    assert torch.allclose(f[:, :, 0], bonds / bonds.norm(dim=-1, keepdim=True))
    r = random_rotations(4, torch.float64, generator=gen)
    assert torch.allclose(bond_frames(c @ r.transpose(1, 2)), f @ r.transpose(1, 2)[:, None], atol=1e-12)
    with pytest.raises(ValueError, match="at least 3 beads"):
        CouplingFlowConfig(bead_types=[0, 1], coordinates="bonds")


def test_bead_invariants_are_bond_lengths_and_angle_cosines(gen):
    from opforce_tutorial.kernels.coupling import bead_invariants

    c = torch.tensor([[[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.5, 3**0.5, 0.0]]], dtype=torch.float64)  # 120° at bead 1
    inv = bead_invariants(c)[0]
    assert torch.allclose(inv, torch.tensor([[0.0, 1.5, 0.0], [1.5, 2.0, -0.5], [2.0, 0.0, 0.0]], dtype=torch.float64))
    r = random_rotations(1, torch.float64, generator=gen)
    assert torch.allclose(bead_invariants(c @ r.transpose(1, 2) + 3.0), bead_invariants(c))


def test_helmert_basis_is_orthonormal_and_mean_free():
    from opforce_tutorial.kernels.coupling import helmert_basis

    q = helmert_basis(5)
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q.sum(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_random_rotations_are_proper_and_uniform(gen):
    r = random_rotations(20_000, dtype=torch.float64, generator=gen)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64), atol=1e-10)
    # Haar: a rotated unit vector is uniform on the sphere, so each component has mean 0 and variance 1/3
    u = r @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(u.mean(0), torch.zeros(3, dtype=torch.float64), atol=0.02)
    assert torch.allclose(u.var(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)


def test_seed_sized_flow_builds_and_checks_lengthscales():
    cfg = CouplingFlowConfig(bead_types=list(range(10)))  # the seed's chignolin setting: 8 × 3, d_model 128, 6 heads
    flow = CouplingFlow(cfg)
    c = torch.randn(2, 10, 3)
    y, v = flow.sample(c)
    assert y.shape == v.shape == (2, 10, 3)
    assert torch.allclose((y - c).mean(dim=1), torch.zeros(2, 3), atol=1e-6)
    assert torch.isfinite(flow.log_prob(y, c, v)).all()
    with pytest.raises(ValueError, match="lengthscale"):
        CouplingFlowConfig(bead_types=[0], lengthscales=[])
    assert math.isclose(cfg.lengthscales[-1], 5.0)


def test_trained_on_a_gaussian_toy_labels_approach_the_posterior_score(tmp_path):
    """x ~ N(μ, s²I), c = x + σε: the posterior is Gaussian with score −(y − m(c))/τ² in closed form."""
    from opforce_tutorial.kernels.coupling import CouplingTraining, train_coupling_flow

    s, sigma = 0.1, 0.1
    mu = torch.tensor([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    x = mu + s * torch.randn(4000, 2, 3, generator=gen) + torch.randn(4000, 1, 3, generator=gen)
    cfg = CouplingFlowConfig(bead_types=[0, 1], n_coupling_layers=2, n_transformer_layers=1, d_model=16,
                             lengthscales=[1.0, 4.0], d_ff=32)
    settings = CouplingTraining(noise_std=sigma, n_steps=600, batch_size=256, lr=3e-3, eval_every=200,
                                checkpoint_every=300, random_rotation=False)
    ckpt = str(tmp_path / "ckpt.pt")
    flow, hist = train_coupling_flow(x, cfg, settings, checkpoint=ckpt, progress=False)
    assert hist["step"] == [200, 400, 600] and hist["val_loss"][-1] < hist["val_loss"][0]
    # resuming a finished run changes nothing
    flow2, hist2 = train_coupling_flow(x, cfg, settings, checkpoint=ckpt, progress=False)
    assert hist2 == hist
    x_test = mu + s * torch.randn(6000, 2, 3, generator=gen) + torch.randn(6000, 1, 3, generator=gen)
    y, f = ReverseNoiseKernel(flow, sigma, kbt=1.0, mean_free=True).sample_with_forces(x_test, generator=gen)
    # E[label | y] is the internal score of the marginal of y; for the exact posterior that marginal is
    # the data, so E[label | y] = −P(y − μ)/s²: regress the labels on it (slope 1, no offset).
    exact = remove_mean(-(y - mu) / s**2)
    slope = float((f * exact).sum() / (exact**2).sum())
    assert 0.85 < slope < 1.15, slope
    offset = (f - exact).mean(0) / exact.std(0)  # a small, finite-training bias (e.g. of the bond length)
    assert offset.abs().max() < 0.1, offset
