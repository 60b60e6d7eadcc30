"""opforce_tutorial: operator (kernel) forces for machine-learned coarse-grained MD.

Units: Å, kcal/mol, kelvin, amu, ps (see :mod:`opforce_tutorial.units`).
"""

__version__ = "0.1.0"
