import pytest
import torch

from opforce_tutorial.forcefield import BondEnergy1D, EnergyModel, fit_force_matching


def _model(n_models=1, seed=0):
    torch.manual_seed(seed)
    m = BondEnergy1D(20, n_models=n_models)
    with torch.no_grad():
        m.centers.copy_(torch.linspace(1.0, 2.0, 20, dtype=torch.float64).repeat(n_models, 1))
        m.width.uniform_(0.04, 0.06)
        m.theta.normal_()
        m.x0.uniform_(1.4, 1.6)
        m.k.uniform_(10, 50)
    return m


def test_forces_equal_minus_finite_difference_gradient():
    m = _model(n_models=3)
    x = 1.0 + torch.rand(50, 3, dtype=torch.float64)
    h = 1e-6
    fd = torch.empty_like(x)
    for j in range(3):
        e = torch.zeros_like(x)
        e[:, j] = h
        fd[:, j] = -(m.energy(x + e) - m.energy(x - e)) / (2 * h)
    assert torch.allclose(m.forces(x), fd, rtol=1e-6, atol=1e-6)
    # the analytic override agrees with the autograd default of the base class
    assert torch.allclose(m.forces(x), EnergyModel.forces(m, x), atol=1e-10)


def test_stack_simulates_each_model_in_its_own_column():
    models = [_model(seed=s) for s in range(3)]
    stacked = BondEnergy1D.stack(models)
    x = 1.0 + torch.rand(10, 3, dtype=torch.float64)
    for j, m in enumerate(models):
        assert torch.allclose(stacked.forces(x)[:, j], m.forces(x[:, j]))
    with pytest.raises(ValueError, match="shape"):
        stacked.energy(torch.zeros(10, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="same number"):
        BondEnergy1D.stack([_model(), BondEnergy1D(5)])


def test_force_matching_recovers_a_smooth_force_and_fits_the_prior():
    x = 1.5 + 0.1 * torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = -200.0 * (x - 1.5) + 30.0 * torch.sin(20.0 * x)
    fitted = BondEnergy1D(24)
    report = fit_force_matching(fitted, x, f, kbt=0.6, ridge=1e-12)
    assert report.val_mse < 1e-4 * float((f**2).mean())
    assert report.n_val == 500
    assert float(fitted.x0) == pytest.approx(float(x[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[500:]].mean()))
    assert float(fitted.centers.min()) >= float(x.min()) and float(fitted.centers.max()) <= float(x.max())
    # noisy labels: the fit approaches the conditional mean, the validation loss approaches the noise variance
    noisy = f + 10.0 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    report = fit_force_matching(BondEnergy1D(24), x, noisy, kbt=0.6)
    assert report.val_mse == pytest.approx(100.0, rel=0.15)


def test_force_matching_rejects_bad_input():
    m = BondEnergy1D(5)
    with pytest.raises(ValueError, match="non-finite"):
        fit_force_matching(m, torch.tensor([1.0, float("nan")]), torch.tensor([0.0, 0.0]), kbt=0.6)
    with pytest.raises(ValueError, match="shape"):
        fit_force_matching(m, torch.ones(3), torch.ones(4), kbt=0.6)
