"""The kernel-force theorem on the toy, numerically (method.md §2)."""

import pytest
import torch

from opforce_tutorial.chapters.bond_toy import BondToySettings, fit_strategy

SETTINGS = BondToySettings(n_data=100_000)
NOISE_STD = 0.05


@pytest.fixture(scope="module")
def data(system):
    return system.sample(SETTINGS.n_data, generator=torch.Generator().manual_seed(0))


def _rms(t):
    return float((t**2).mean()) ** 0.5


def test_noise_labels_recover_smoothed_mean_force(system, data):
    r = fit_strategy(system, "noise", data, NOISE_STD**2, settings=SETTINGS, generator=torch.Generator().manual_seed(1))
    y = r.y[:20_000]  # evaluate where the labelled positions are: y ~ p * N(0, σ²)
    target = system.smoothed_mean_force(y, NOISE_STD)
    err = _rms(r.model.forces(y).detach() - target)
    assert err < 0.05 * _rms(target), (err, _rms(target))
    # ... and that target is *not* the exact mean force (the test can tell the two apart)
    assert _rms(system.mean_force(y) - target) > 0.5 * _rms(target)


def test_exact_reverse_kernel_recovers_exact_mean_force(system, data):
    r = fit_strategy(system, "reverse (exact posterior)", data, NOISE_STD**2, settings=SETTINGS,
                     generator=torch.Generator().manual_seed(2))
    x = data[:20_000]
    target = system.mean_force(x)
    err = _rms(r.model.forces(x).detach() - target)
    assert err < 0.05 * _rms(target), (err, _rms(target))
