"""Model systems: analytic toys with exact properties (and, later, molecules)."""

from .toy1d import DoubleWellBond

__all__ = ["DoubleWellBond"]
