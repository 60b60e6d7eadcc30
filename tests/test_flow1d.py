import pytest
import torch

from opforce_tutorial.kernels import NoiseConditionalFlow1D, ReverseNoiseKernel
from opforce_tutorial.kernels.flow1d import Flow1DConfig, Flow1DTraining, train_flow1d


@pytest.fixture(scope="module")
def trained_flow():
    from opforce_tutorial.systems import DoubleWellBond

    flow, metrics = train_flow1d(DoubleWellBond(), Flow1DTraining(n_steps=1000, n_data=50_000), progress=False)
    return flow, metrics


def _random_flow(seed=0):
    torch.manual_seed(seed)
    flow = NoiseConditionalFlow1D(Flow1DConfig(loc=1.5, length_scale=0.14))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("noise_std", [0.01, 0.05, 0.12])
def test_density_integrates_to_one(noise_std):
    flow = _random_flow()
    g = torch.linspace(-1.0, 4.0, 200_001, dtype=torch.float64)
    for c in (1.2, 1.5, 1.9):
        with torch.no_grad():
            q = torch.exp(flow.log_prob(g, torch.full_like(g, c), noise_std))
        assert float(torch.trapezoid(q, g)) == pytest.approx(1.0, abs=1e-5)


def test_label_equals_finite_difference_of_log_density(gen):
    flow = _random_flow(1)
    kern = ReverseNoiseKernel(flow.at(0.05), 0.05, kbt=0.6)
    x = 1.5 + 0.1 * torch.randn(300, dtype=torch.float64, generator=gen)
    y, f = kern.sample_with_forces(x, generator=torch.Generator().manual_seed(3))
    c = x + 0.05 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    h = 1e-6
    with torch.no_grad():
        fd = (flow.log_prob(y + h, c, 0.05) - flow.log_prob(y - h, c, 0.05)) / (2 * h)
    assert torch.allclose(f, 0.6 * fd, rtol=1e-5, atol=1e-4)


def test_sampling_matches_density_and_cdf_is_monotone(gen):
    flow = _random_flow(2)
    c = torch.full((100_000,), 1.45, dtype=torch.float64)
    y = flow.sample(c, 0.05, generator=gen)
    with torch.no_grad():
        u = flow.cdf(y, c, 0.05)
        grid = torch.linspace(1.0, 2.0, 1001, dtype=torch.float64)
        cdf = flow.cdf(grid, torch.full_like(grid, 1.45), 0.05)
    assert (cdf[1:] >= cdf[:-1]).all()
    # probability integral transform: F(y|c) of samples is uniform
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert torch.allclose(counts / len(u), torch.full((10,), 0.1, dtype=u.dtype), atol=0.006)


def test_noise_range_is_enforced():
    flow = _random_flow()
    with pytest.raises(ValueError, match="outside the range"):
        flow.at(0.5)


def test_training_approaches_exact_posterior(trained_flow):
    flow, metrics = trained_flow
    kl = metrics["kl_to_exact_posterior_nats"]
    assert len(kl) == 5
    # 1000 steps bring every noise level within 0.08 nats of the exact posterior
    assert max(kl.values()) < 0.08, kl


def test_shipped_flow_is_close_to_exact_posterior():
    from opforce_tutorial.pretrained import read_registry

    kl = read_registry()["toy1d-flow"]["metrics"]["kl_to_exact_posterior_nats"]
    assert max(kl.values()) < 0.02, kl
