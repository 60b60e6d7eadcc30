"""Physical constants and the package's unit conventions.

Conventions used everywhere in ``opforce_tutorial`` unless a name says otherwise:

* length: ångström (Å);
* energy: kcal/mol;
* force: kcal/mol/Å;
* temperature: kelvin;
* mass: atomic mass units (g/mol);
* time: picoseconds.

With these units Newton's law needs one conversion factor:
``1 kcal/mol / (Å · amu) = 418.4 Å/ps²`` (:data:`KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2`).

Noise widths are always standard deviations in Å and are named ``noise_std``; where a variance is
meant (the book's slider) the name is ``noise_var`` (Å²) and :func:`noise_std_from_var` converts.
"""

from __future__ import annotations

import math

#: Boltzmann constant in kcal/(mol K).
KB_KCAL_PER_MOL_K = 0.0019872042586408316
#: Boltzmann constant in kJ/(mol K).
KB_KJ_PER_MOL_K = 0.008314462618
#: 1 kcal = 4.184 kJ (thermochemical calorie).
KJ_PER_KCAL = 4.184
#: 1 nm = 10 Å.
ANGSTROM_PER_NM = 10.0
#: (kcal/mol) / (Å amu) expressed in Å/ps².
KCAL_PER_MOL_PER_AMU_IN_A2_PER_PS2 = 418.4

_KB = {"kcal/mol": KB_KCAL_PER_MOL_K, "kJ/mol": KB_KJ_PER_MOL_K}


def kbt(temperature: float, energy_unit: str = "kcal/mol") -> float:
    """Thermal energy k_B T at ``temperature`` (kelvin) in ``energy_unit`` ('kcal/mol' or 'kJ/mol')."""
    if energy_unit not in _KB:
        raise ValueError(f"energy_unit must be one of {sorted(_KB)}, got {energy_unit!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive (kelvin), got {temperature!r}")
    return _KB[energy_unit] * float(temperature)


def noise_std_from_var(noise_var: float) -> float:
    """Standard deviation (Å) of a Gaussian with variance ``noise_var`` (Å²)."""
    if not noise_var > 0:
        raise ValueError(f"noise_var must be positive (Å²), got {noise_var!r}")
    return math.sqrt(noise_var)


def noise_var_from_std(noise_std: float) -> float:
    """Variance (Å²) of a Gaussian with standard deviation ``noise_std`` (Å)."""
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive (Å), got {noise_std!r}")
    return float(noise_std) ** 2
