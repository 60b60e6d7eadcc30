import numpy as np
import pytest
import torch

from opforce_tutorial.systems.toy1d import ExactDenoisingPosterior


def test_density_normalised_and_pmf(system):
    g = system.grid()
    assert float(torch.trapezoid(system.density(g), g)) == pytest.approx(1.0, abs=1e-8)
    pmf = system.pmf(g)
    assert float(pmf.min()) == 0.0
    # PMF = U - U_min on the domain
    u = system.potential(g)
    assert torch.allclose(pmf, u - u.min(), atol=1e-9)


def test_mean_force_is_minus_gradient(system):
    r = torch.linspace(1.2, 1.8, 50, dtype=torch.float64)
    h = 1e-6
    fd = -(system.potential(r + h) - system.potential(r - h)) / (2 * h)
    assert torch.allclose(system.mean_force(r), fd, rtol=1e-6, atol=1e-6)


def test_exact_sampler_matches_quadrature_moments(system, gen):
    x = system.sample(200_000, generator=gen)
    g = system.grid()
    p = system.density(g)
    mean = float(torch.trapezoid(p * g, g))
    var = float(torch.trapezoid(p * (g - mean) ** 2, g))
    se = (var / len(x)) ** 0.5
    assert abs(float(x.mean()) - mean) < 5 * se
    assert float(x.var()) == pytest.approx(var, rel=0.01)
    # fraction in the right well
    right = float(torch.trapezoid(p * (g > system.r0), g))
    assert float((x > system.r0).double().mean()) == pytest.approx(right, abs=5 * (right * (1 - right) / len(x)) ** 0.5)


@pytest.mark.parametrize("noise_std", [0.02, 0.08])
def test_smoothed_mean_force_is_score_of_smoothed_density(system, noise_std):
    y = torch.linspace(1.2, 1.8, 40, dtype=torch.float64)
    h = 1e-5
    logp = lambda t: torch.log(system.smoothed_density(t, noise_std))  # noqa: E731
    fd = system.kbt * (logp(y + h) - logp(y - h)) / (2 * h)
    assert torch.allclose(system.smoothed_mean_force(y, noise_std), fd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("noise_std", [0.01, 0.05, 0.12])
def test_posterior_normalised_and_sampled_correctly(system, gen, noise_std):
    post = ExactDenoisingPosterior(system, noise_std)
    g = system.grid()
    for c in (1.3, 1.5, 1.62):
        q = torch.exp(post.log_prob(g, torch.full_like(g, c)))
        assert float(torch.trapezoid(q, g)) == pytest.approx(1.0, abs=1e-4)
        ys, _ = post.sample(torch.full((40_000,), c, dtype=torch.float64), generator=gen)
        mean = float(torch.trapezoid(q * g, g))
        sd = float(torch.trapezoid(q * (g - mean) ** 2, g)) ** 0.5
        assert float(ys.mean()) == pytest.approx(mean, abs=5 * sd / 200)
        assert float(ys.std()) == pytest.approx(sd, rel=0.03)


def test_posterior_marginal_is_data_distribution(system, gen):
    """x ~ p, c = x + σε, y ~ p(·|c)  =>  y ~ p (the reverse kernel's key property)."""
    x = system.sample(100_000, generator=gen)
    c = x + 0.08 * torch.randn(x.shape, dtype=x.dtype, generator=gen)
    y, _ = ExactDenoisingPosterior(system, 0.08).sample(c, generator=gen)
    edges = np.linspace(1.2, 1.8, 25)
    expected = system.bin_probabilities(edges) * len(y)
    observed, _ = np.histogram(y.numpy(), edges)
    chi2 = float(np.sum((observed - expected) ** 2 / np.maximum(expected, 1)))
    assert chi2 < 60  # 24 bins: chi2 ~ 24 ± 7 when correct; the noised c fails badly
    observed_c, _ = np.histogram(c.numpy(), edges)
    assert float(np.sum((observed_c - expected) ** 2 / np.maximum(expected, 1))) > 500


def test_bad_parameters(system):
    with pytest.raises(ValueError):
        ExactDenoisingPosterior(system, 0.0)
    with pytest.raises(ValueError, match="wells"):
        type(system)(domain=(1.4, 2.0))
