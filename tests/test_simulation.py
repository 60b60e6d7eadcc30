import math

import pytest
import torch

from opforce_tutorial.simulation import NonFiniteCoordinatesError, simulate_langevin
from opforce_tutorial.units import KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2


@pytest.mark.parametrize("dt", [0.002, 0.01])
def test_baoab_samples_exact_harmonic_variance(device, dt):
    """BAOAB's configurational variance for U = k x²/2 is k_BT/k at any stable Δt."""
    k, kbt, mass = 100.0, 0.6, 12.0
    period = 2 * math.pi / math.sqrt(k * KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2 / mass)
    assert dt < period / 2  # stable
    x0 = torch.zeros(2000, 3, dtype=torch.float64, device=device)
    traj = simulate_langevin(lambda x: -k * x, x0, masses=mass, kbt=kbt, dt=dt, friction=5.0, n_steps=3000,
                             burn_in=500, save_every=25, generator=torch.Generator(device).manual_seed(0),
                             progress=False)
    assert traj.shape == (100, 2000, 3)
    var = float(traj.var())
    assert var == pytest.approx(kbt / k, rel=0.02)


def test_masses_broadcast_per_bead(device):
    """Equipartition per bead with different masses: positional variance is mass-independent."""
    masses = torch.tensor([[1.0], [50.0]], dtype=torch.float64, device=device)
    x0 = torch.zeros(4000, 2, 3, dtype=torch.float64, device=device)
    traj = simulate_langevin(lambda x: -50.0 * x, x0, masses=masses, kbt=0.6, dt=0.002, friction=10.0,
                             n_steps=1500, burn_in=500, save_every=20, progress=False,
                             generator=torch.Generator(device).manual_seed(1))
    var = traj.var(dim=(0, 1, 3))
    assert torch.allclose(var, torch.full_like(var, 0.6 / 50.0), rtol=0.03)


def test_non_finite_guard_names_replica_and_step():
    def exploding(x):
        f = -x
        f[3] = float("nan")
        return f

    with pytest.raises(NonFiniteCoordinatesError, match=r"replica\(s\) \[3\] between steps 0 and 10"):
        simulate_langevin(exploding, torch.zeros(5, 2), masses=1.0, kbt=0.6, dt=0.001, friction=1.0,
                          n_steps=100, save_every=10, progress=False)


def test_argument_checks():
    with pytest.raises(ValueError, match="dt"):
        simulate_langevin(lambda x: -x, torch.zeros(2, 1), masses=1.0, kbt=0.6, dt=-1.0, friction=1.0, n_steps=10)
