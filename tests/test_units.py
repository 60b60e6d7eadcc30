import math

import pytest

from opforce_tutorial import units


def test_kbt_values():
    # seed's chignolin data: 350 K -> 0.6955 kcal/mol (method.md)
    assert units.kbt(350.0) == pytest.approx(0.6955, abs=5e-5)
    assert units.kbt(300.0, "kJ/mol") == pytest.approx(2.4943, abs=1e-4)
    assert units.kbt(300.0, "kJ/mol") == pytest.approx(units.kbt(300.0) * units.KJ_PER_KCAL, rel=1e-6)


def test_kbt_rejects_bad_input():
    with pytest.raises(ValueError, match="energy_unit"):
        units.kbt(300.0, "eV")
    with pytest.raises(ValueError, match="kelvin"):
        units.kbt(-1.0)


def test_noise_var_std_conversion():
    assert units.noise_std_from_var(0.0025) == pytest.approx(0.05)
    assert units.noise_var_from_std(0.05) == pytest.approx(0.0025)
    with pytest.raises(ValueError, match="noise_var"):
        units.noise_std_from_var(0.0)


def test_newton_conversion_factor():
    # 1 kcal/mol/(Å amu) = 4184 J/mol / (1e-10 m * 1e-3 kg/mol) = 4.184e16 m/s² = 418.4 Å/ps²
    si = 4184.0 / (1e-10 * 1e-3)  # m/s²
    assert units.KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2 == pytest.approx(si * 1e10 / 1e24)
    assert math.isclose(units.kbt(1.0) / units.KB_KCAL_PER_MOL_K, 1.0)
