import pytest
import torch

from opforce_tutorial.forcefield import BondEnergy1D, EnergyModel, fit_force_matching


def _model(n_models=1, seed=0):
    torch.manual_seed(seed)
    m = BondEnergy1D(torch.linspace(1.0, 2.0, 20, dtype=torch.float64), width=0.05, n_models=n_models)
    with torch.no_grad():
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


def test_force_matching_recovers_a_model_in_its_own_basis():
    truth = _model()
    x = 1.2 + 0.6 * torch.rand(5000, dtype=torch.float64)
    f = truth.forces(x).detach()
    fitted = BondEnergy1D(truth.centers, truth.width)
    report = fit_force_matching(fitted, x, f, kbt=0.6, ridge=1e-12)
    assert report.val_mse < 1e-8 * float((f**2).mean())
    assert report.n_val == 500


def test_force_matching_rejects_bad_input():
    m = BondEnergy1D(torch.linspace(1.0, 2.0, 5, dtype=torch.float64), 0.2)
    with pytest.raises(ValueError, match="non-finite"):
        fit_force_matching(m, torch.tensor([1.0, float("nan")]), torch.tensor([0.0, 0.0]), kbt=0.6)
    with pytest.raises(ValueError, match="shape"):
        fit_force_matching(m, torch.ones(3), torch.ones(4), kbt=0.6)
