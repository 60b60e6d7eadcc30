"""Model systems: analytic toys with exact properties, and the CG molecules with the observables they own."""

from . import alanine_dipeptide, cln025
from .base import CGSystem
from .toy1d import DoubleWellBond

#: The CG molecules of the book, by dataset name.
CG_SYSTEMS: dict[str, CGSystem] = {s.name: s for s in (alanine_dipeptide.SYSTEM, cln025.SYSTEM)}

__all__ = ["CGSystem", "CG_SYSTEMS", "DoubleWellBond"]
