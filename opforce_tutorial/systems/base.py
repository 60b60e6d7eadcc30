"""What the package knows of a CG system: its beads, the observables it owns, its states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..observables import Observable


@dataclass(frozen=True)
class CGSystem:
    """A molecule at the CG level, as the data, evaluation and study layers use it.

    ``observables``: chain observables' names and the system's own :class:`~opforce_tutorial.observables.Observable`
    objects, every one its reference histograms hold and every evaluator scores. ``states(frames)``:
    ``{state: (n,) bool}`` for frames (n, beads, 3) (basins, folded/unfolded), or ``None``.
    ``build_command``: the command that rebuilds its shipped dataset.
    """

    name: str
    bead_names: tuple[str, ...]
    observables: tuple[str | Observable, ...]
    states: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
    build_command: str = ""
    #: (beads,) amu, or None: from the element of each bead's atom name (a backbone map's C, N, CA)
    bead_masses: tuple[float, ...] | None = None

    @property
    def n_beads(self) -> int:
        return len(self.bead_names)
